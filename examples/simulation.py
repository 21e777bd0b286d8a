"""The explorer's producers, simulated for `make demo`: valid payloads of the reference topology.

`Chains` invents blocks, transactions and transfers that hang together (increasing block
numbers, parent hashes, nonces per sender); each simulated service draws its next events from it:
the indexer (block.new, transaction.confirmed, token.transfer), the mempool (transaction.pending,
and now and then a fee-less one, the poison input `examples.explorer_handlers.estimate_fee` refuses)
and the verification service (contract.verified).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

Event = tuple[str, int, dict[str, Any]]  # (event type, chain id, payload)

TOKENS = ("0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48", "0xdac17f958d2ee523a2206206994597c13d831ec7",
          "0x6b175474e89094c44da98b954eedeac495271d0f")
GWEI = 10**9


class Chains:
    """Consistent made-up chain state, shared by the simulated services (thread-safe)."""

    def __init__(self, chain_ids: tuple[int, ...], seed: int = 138) -> None:
        self.chain_ids = chain_ids
        self.random = random.Random(seed)
        self.heights = dict.fromkeys(chain_ids, 0)
        self.tips = {chain: self.hash() for chain in chain_ids}
        self.nonces: dict[str, int] = {}
        self.lock = threading.Lock()

    def hash(self) -> str:
        return f"0x{self.random.getrandbits(256):064x}"

    def address(self) -> str:
        return f"0x{self.random.getrandbits(160):040x}"

    def sender(self) -> str:
        """One of a few hundred senders, so per-sender order and nonces mean something."""
        return f"0x{self.random.randrange(300):040x}"

    def now(self) -> str:
        return datetime.now(UTC).isoformat()

    def block(self) -> Iterator[Event]:
        """The indexer's view of a new block: the block, its confirmed transactions and their transfers."""
        with self.lock:
            chain = self.random.choice(self.chain_ids)
            self.heights[chain] += 1
            parent, self.tips[chain] = self.tips[chain], self.hash()
            count = self.random.randint(1, 4)
            yield "block.new", chain, {"block_number": self.heights[chain], "hash": self.tips[chain],
                                       "parent_hash": parent, "timestamp": self.now(), "transaction_count": count,
                                       "miner": self.address(),
                                       "base_fee_per_gas": str(self.random.randint(1, 40) * GWEI)}
            for _ in range(count):
                transaction = self.hash()
                yield "transaction.confirmed", chain, {
                    "hash": transaction, "block_number": self.heights[chain], "from_address": self.sender(),
                    "to_address": self.address(), "status": "failed" if self.random.random() < 0.05 else "success",
                    "value": str(self.random.randint(0, 10**18))}
                if self.random.random() < 0.5:
                    yield "token.transfer", chain, {
                        "token_address": self.random.choice(TOKENS), "from_address": self.sender(),
                        "to_address": self.sender(), "amount": str(self.random.randint(1, 10**9)),
                        "transaction_hash": transaction, "log_index": 0}

    def pending(self, fee_less: bool = False) -> Event:
        """The mempool's view of a new transaction (`fee_less`: with neither fee field, the poison input)."""
        with self.lock:
            chain = self.random.choice(self.chain_ids)
            sender = self.sender()
            nonce = self.nonces[sender] = self.nonces.get(sender, -1) + 1
            payload: dict[str, Any] = {"hash": self.hash(), "from_address": sender, "to_address": self.address(),
                                       "nonce": nonce, "value": str(self.random.randint(0, 10**18)),
                                       "gas": 21_000, "first_seen": self.now()}
            if not fee_less:
                payload["max_fee_per_gas"] = str(self.random.randint(10, 80) * GWEI)
                payload["max_priority_fee_per_gas"] = str(self.random.randint(1, 3) * GWEI)
            return "transaction.pending", chain, payload

    def verified(self) -> Event:
        """The verification service's view: a contract's source was verified."""
        with self.lock:
            return "contract.verified", self.random.choice(self.chain_ids), {
                "address": self.address(), "verification_status": "verified", "verified_at": self.now(),
                "compiler_version": "v0.8.24+commit.e11b9ed9"}

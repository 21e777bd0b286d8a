"""Handlers of the reference topology (topology.yaml), one per consumer group.

README.md's quick tour runs `on_transfer`; `make demo` (examples/demo.py) runs them all. Each does
something small and visible: it logs a line naming the event, and counts, keeps a cache or an
index. State lives in the module (`topo run` runs one group per process); worker threads call
handlers concurrently, so state that is read and written in two steps takes a lock.

`estimate_fee` (fee-oracle) refuses a pending transaction that carries no fee at all: the
recognisable poison input that `make demo` publishes now and then, retried after 1 s, 2 s and
4 s, then dead-lettered (`topo dlq list -t topology.yaml --group fee-oracle`).
"""

from __future__ import annotations

import logging
import sqlite3
import statistics
import threading
from collections import Counter, deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # written by `topo generate`; `topo run` loads the event classes itself
    from explorer_events import (
        BlockNewEvent,
        ContractVerifiedEvent,
        TokenTransferEvent,
        TransactionConfirmedEvent,
        TransactionPendingEvent,
    )

    from topo.runtime.handlers import HandlerContext


def group_log(group: str) -> logging.Logger:
    """Each group's lines under `examples.<group>` (make demo shows the latest one per group)."""
    return logging.getLogger(f"examples.{group}")


def push_update(event: BlockNewEvent | TransactionConfirmedEvent | TransactionPendingEvent) -> None:
    """websocket-service: push each block and transaction to the clients watching its chain (here: a log line)."""
    group_log("websocket-service").info("push %s to the clients of chain %d (event %s)", event.event_type,
                                        event.chain_id, event.event_id)


SEARCH_INDEX: dict[str, str] = {}  # transaction hash or contract address -> what a search for it shows


def index_for_search(event: TransactionConfirmedEvent | ContractVerifiedEvent) -> None:
    """search-indexer: keep an in-memory search index of transactions and verified contracts."""
    if event.event_type == "transaction.confirmed":
        transaction = event.payload
        key, entry = transaction.hash, f"transaction in block {transaction.block_number}: {transaction.status}"
    else:
        contract = event.payload
        key, entry = contract.address, f"contract {contract.verification_status} at {contract.verified_at}"
    SEARCH_INDEX[key] = entry  # one dict assignment: atomic, no lock needed
    group_log("search-indexer").info("indexed %s (%d entries) (event %s)", key, len(SEARCH_INDEX), event.event_id)


TOTALS: Counter[str] = Counter()
_totals_lock = threading.Lock()


def count(event: BlockNewEvent | TransactionConfirmedEvent | TokenTransferEvent) -> None:
    """analytics: running totals of blocks, transactions (and how many failed) and transfers."""
    with _totals_lock:
        if event.event_type == "block.new":
            TOTALS["blocks"] += 1
        elif event.event_type == "transaction.confirmed":
            TOTALS["transactions"] += 1
            TOTALS["failed"] += event.payload.status == "failed"
        else:
            TOTALS["transfers"] += 1
        summary = (f"{TOTALS['blocks']} blocks, {TOTALS['transactions']} transactions "
                   f"({TOTALS['failed']} failed), {TOTALS['transfers']} transfers")
    group_log("analytics").info("%s so far (event %s)", summary, event.event_id)


CACHE: dict[str, object] = {}  # what the API gateway serves without asking the indexer


def invalidate(event: BlockNewEvent | ContractVerifiedEvent) -> None:
    """cache-invalidation: refresh a chain's latest block, drop a verified contract's cached page."""
    if event.event_type == "block.new":
        key = f"{event.chain_id}:latest-block"
        previous, CACHE[key] = CACHE.get(key), event.payload.block_number
        change = f"{previous} -> {CACHE[key]}"
    else:
        key = f"{event.chain_id}:contract:{event.payload.address}"
        change = "dropped" if CACHE.pop(key, None) is not None else "not cached"
    group_log("cache-invalidation").info("cache %s: %s (event %s)", key, change, event.event_id)


BALANCES_TABLE = """CREATE TABLE IF NOT EXISTS balances (
    chain_id INTEGER, token TEXT, holder TEXT, amount TEXT, PRIMARY KEY (chain_id, token, holder))"""


def update_balances(event: TokenTransferEvent, context: HandlerContext) -> None:
    """token-balance-updater: move the amount between two balances in the dedup store's own
    transaction (PostgreSQL, or SQLite), committed with the event's processed mark: a redelivery is
    never counted twice."""
    transfer, database = event.payload, context.transaction
    mark = "?" if isinstance(database, sqlite3.Connection) else "%s"  # the drivers' placeholders
    database.execute(BALANCES_TABLE)
    for holder, sign in ((transfer.from_address, -1), (transfer.to_address, 1)):
        row = database.execute(f"SELECT amount FROM balances WHERE chain_id = {mark} AND token = {mark} "
                               f"AND holder = {mark}", (event.chain_id, transfer.token_address, holder)).fetchone()
        balance = (int(row[0]) if row else 0) + sign * int(transfer.amount)  # uint256: beyond SQL integers
        database.execute(f"INSERT INTO balances VALUES ({mark}, {mark}, {mark}, {mark}) ON CONFLICT "
                         "(chain_id, token, holder) DO UPDATE SET amount = excluded.amount",
                         (event.chain_id, transfer.token_address, holder, str(balance)))
    group_log("token-balance-updater").info("balance of %s in token %s is now %d (event %s)", transfer.to_address,
                                            transfer.token_address, balance, event.event_id)


def on_transfer(event: TokenTransferEvent) -> None:
    """notifications: tell the receiver of a transfer (here on standard output)."""
    transfer = event.payload
    print(f"notify {transfer.to_address}: {transfer.amount} of token {transfer.token_address} "
          f"on chain {event.chain_id} (event {event.event_id})", flush=True)


FEES_PER_GAS: deque[int] = deque(maxlen=200)  # wei, the most recent pending transactions
_fees_lock = threading.Lock()


def estimate_fee(event: TransactionPendingEvent) -> None:
    """fee-oracle: the median fee per gas over the recent pending transactions.

    A transaction with neither `max_fee_per_gas` nor `gas_price` cannot be priced: it raises, so it
    is retried and then dead-lettered (the payload is valid, both fields are optional).
    """
    pending = event.payload
    fee = pending.max_fee_per_gas or pending.gas_price
    if fee is None:
        raise ValueError(f"pending transaction {pending.hash} carries no fee (neither max_fee_per_gas nor gas_price)")
    with _fees_lock:
        FEES_PER_GAS.append(int(fee))
        median, seen = statistics.median(FEES_PER_GAS), len(FEES_PER_GAS)
    group_log("fee-oracle").info("median fee %.2f gwei over %d pending transactions (event %s)", median / 1e9,
                                 seen, event.event_id)

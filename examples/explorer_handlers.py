"""Handlers of the reference topology (topology.yaml); README.md's quick tour runs `on_transfer`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # written by `topo generate`; `topo run` loads the event classes itself
    from explorer_events import TokenTransferEvent


def on_transfer(event: TokenTransferEvent) -> None:
    """notifications: tell the receiver of a transfer (here on standard output)."""
    transfer = event.payload
    print(f"notify {transfer.to_address}: {transfer.amount} of token {transfer.token_address} "
          f"on chain {event.chain_id} (event {event.event_id})", flush=True)

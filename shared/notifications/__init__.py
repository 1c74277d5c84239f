"""Notifications: tell the team about each outcome, once per channel.

`model` (what is said), `render` (per channel kind), `delivery` (exactly-once per channel, with
retries), `senders` (webhooks and the local file) and `firestore` (the ledger and the facts).
"""

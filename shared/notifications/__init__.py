"""Notifications: tell the team about each outcome, once per channel.

`model` (what is said), `render` (per channel kind), `delivery` (exactly-once per channel, with
retries, and its ledger port) and `senders` (webhooks and the local file). The use case is
`shared.usecases.notify`; the ledger on Firestore is `shared.adapters.notification_ledger`.
"""

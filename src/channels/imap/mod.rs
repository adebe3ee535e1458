//! The `imap` channel: watches a mailbox on any IMAP server. Messages are fetched with BODY.PEEK
//! in batches, committed, and only then moved (or flagged) on the server; the channel's position
//! `(mailbox, UIDVALIDITY, UID)` advances only over committed messages, so a crash at any point
//! re-fetches and idempotent intake makes that harmless.

mod connect;
mod source;
mod unfetchable;

pub use source::run;

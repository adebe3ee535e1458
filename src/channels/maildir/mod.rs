//! The `maildir` channel: the local MTA delivers the centre's mailbox into a Maildir, phananh
//! ingests each message in new/ and, only after the commit, moves it to cur/ (flagged seen) or to
//! a configured folder. A crash between the two leaves the file in new/; the next scan re-submits
//! it, intake recognises it, and it is moved then.

mod source;

pub use source::run;

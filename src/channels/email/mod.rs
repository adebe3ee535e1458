//! E-mail to report: the normaliser every mail channel (maildir now, IMAP next) shares.
//!
//! mail-parser is used only inside `parse.rs`, so moving to mail-parser 1.x (which needs a newer
//! rustc) touches one file.

mod parse;

pub use parse::{Reject, normalize};

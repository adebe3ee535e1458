//! E-mail to report: the normaliser every mail channel (maildir now, IMAP next) shares.
//!
//! mail-parser is used only inside `parse.rs`, so moving to mail-parser 1.x (which needs a newer
//! rustc) touches one file.

pub mod automated;
mod parse;

pub use parse::{Parsed, Reject, normalize, parse};

//! E-mail to report: the normaliser every mail channel (maildir now, IMAP next) shares.
//!
//! mail-parser is used only inside this folder, so moving to mail-parser 1.x (which needs a newer
//! rustc) touches these files and nothing else.

pub mod automated;
mod bounce;
mod parse;

pub use bounce::Bounce;
pub use parse::{Parsed, Reject, normalize, parse};

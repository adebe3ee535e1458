//! Pure functions over the record: text, phone numbers, places. No I/O here, so every rule is
//! testable on its own and the fuzzers can reach it.

pub mod classify;
pub mod enrich;
pub mod geo;
pub mod phone;
pub mod photo;
pub mod place;
pub mod similar;
pub mod text;

use crate::report::{Category, Location, Media, OmittedMedia, Reporter};
use chrono::{DateTime, FixedOffset};

/// A report as a channel's parser produced it, before the store gives it an id, a tracking code
/// and a place among earlier reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Draft {
    pub external_id: String,
    pub submitted_at: Option<DateTime<FixedOffset>>,
    pub reporter: Reporter,
    pub title: String,
    pub description: String,
    pub quoted: Option<String>,
    /// Everything the sender wrote, before quotes and signatures were cut.
    pub full_text: String,
    pub language: String,
    pub category: Category,
    pub unit: Option<String>,
    pub location: Option<Location>,
    pub media: Vec<Media>,
    pub omitted_media: Vec<OmittedMedia>,
    /// `dedupe_key()`, computed by the parser off the writer thread: folding is a third of the
    /// writer's CPU per report when done inside the transaction.
    pub text_key: Option<String>,
    /// The ward named by the position or the text.
    pub ward: Option<crate::report::WardRef>,
    /// What "the same incident from someone else" compares, computed off the writer thread.
    #[serde(skip)]
    pub signature: Option<similar::Signature>,
    /// Tracking codes the message cites (subject, In-Reply-To, References): a follow-up if one is
    /// a live report of the same reporter.
    pub cites: Vec<String>,
}

impl Draft {
    /// A report made of text only, by a reporter known by an app user id, in the default
    /// category: what tools and tests build drafts from before `Enricher::apply`.
    pub fn from_text(
        external_id: &str,
        reporter: &str,
        text: &str,
        default_category: &str,
    ) -> Draft {
        Draft {
            external_id: external_id.into(),
            submitted_at: None,
            reporter: Reporter {
                app_user_id: Some(reporter.into()),
                ..Reporter::default()
            },
            title: String::new(),
            description: text.into(),
            quoted: None,
            full_text: text.into(),
            language: "vi".into(),
            category: Category {
                code: default_category.into(),
                source: crate::report::CategorySource::Default,
                score: 0.0,
            },
            unit: None,
            location: None,
            media: vec![],
            omitted_media: vec![],
            text_key: None,
            ward: None,
            signature: None,
            cites: vec![],
        }
    }

    /// The key for "same reporter, same text": folded title and description; for a text-less
    /// report, its photos. None when there is nothing to compare.
    pub fn dedupe_key(&self) -> Option<String> {
        let text = text::dedupe_key(&format!("{}\n{}", self.title, self.description));
        if !text.is_empty() {
            return Some(sha256_hex(text.as_bytes()));
        }
        if self.media.is_empty() {
            return None;
        }
        let mut shas: Vec<&str> = self.media.iter().map(|m| m.sha256.as_str()).collect();
        shas.sort_unstable();
        Some(sha256_hex(shas.join(",").as_bytes()))
    }
}

/// A file to keep content-addressed before the report that names it is committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Blob {
    pub sha256: String,
    pub bytes: Vec<u8>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

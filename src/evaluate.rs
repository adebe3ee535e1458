//! `phananh dedupe-eval`: runs each labelled pair of fixtures/dedupe/pairs.jsonl through the real
//! pipeline (the configured categories, geography and `[dedupe]` policy, a fresh store per pair)
//! and prints precision and recall for each level. Pair b counts as "found the same" when the
//! store made it a duplicate of a (any rule: same message, same text, same photo, similar).

use crate::config::Config;
use crate::pipeline::enrich::Enricher;
use crate::pipeline::{Draft, photo, sha256_hex};
use crate::report::{Category, CategorySource, Location, LocationSource, Media};
use crate::store::{Outcome, Store, StoreSettings, Submission, SubmissionBody};
use anyhow::{Context, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Deserialize)]
struct Pair {
    id: String,
    level: String,
    duplicate: bool,
    #[serde(default)]
    why: String,
    a: Side,
    b: Side,
}

#[derive(Debug, Deserialize)]
struct Side {
    reporter: String,
    channel: String,
    at: String,
    text: String,
    #[serde(default)]
    title: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
    category: Option<String>,
    #[serde(default)]
    photos: Vec<String>,
    message_id: Option<String>,
}

/// Counts for one level.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Score {
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
    pub tn: usize,
}

impl Score {
    pub fn precision(&self) -> f64 {
        if self.tp + self.fp == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fp) as f64
        }
    }

    pub fn recall(&self) -> f64 {
        if self.tp + self.fn_ == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fn_) as f64
        }
    }

    fn add(&mut self, truth: bool, said: bool) {
        match (truth, said) {
            (true, true) => self.tp += 1,
            (false, true) => self.fp += 1,
            (true, false) => self.fn_ += 1,
            (false, false) => self.tn += 1,
        }
    }
}

/// (level → score, the pairs it got wrong with what it said).
pub struct Evaluation {
    pub levels: BTreeMap<String, Score>,
    pub wrong: Vec<String>,
}

pub async fn run(config: &Config, dir: &Path) -> anyhow::Result<Evaluation> {
    let file = dir.join("pairs.jsonl");
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let enricher = Enricher::new(&config.daemon);
    let scratch = tempfile::tempdir().context("cannot make a scratch directory")?;
    let mut levels: BTreeMap<String, Score> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let pair: Pair = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not a pair", file.display(), n + 1))?;
        let mut settings = StoreSettings::from_config(config);
        settings.db_path = scratch.path().join(format!("{}.db", pair.id));
        let store = Store::open(settings)?;
        let cross_mailbox = pair.level == "same_message";
        let a = submission(&pair.a, "a", &pair, dir, &enricher, config, cross_mailbox)?;
        let b = submission(&pair.b, "b", &pair, dir, &enricher, config, cross_mailbox)?;
        let first = store.submit(a).await?;
        let second = store.submit(b).await?;
        store.close().await;
        let said = match (&first.outcome, &second.outcome) {
            (Outcome::Created { report }, Outcome::Duplicate { of, .. }) => of.id == report.id,
            (Outcome::Created { .. }, _) => false,
            (other, _) => bail!(
                "pair {}: side a was not stored as a report: {other:?}",
                pair.id
            ),
        };
        levels
            .entry(pair.level.clone())
            .or_default()
            .add(pair.duplicate, said);
        if said != pair.duplicate {
            let how = match &second.outcome {
                Outcome::Duplicate { .. } => "linked",
                _ => "kept apart",
            };
            wrong.push(format!(
                "{} ({}): {how}; labelled {}: {}",
                pair.id,
                pair.level,
                if pair.duplicate {
                    "the same"
                } else {
                    "different"
                },
                pair.why
            ));
        }
    }
    if levels.is_empty() {
        bail!("{} holds no pairs", file.display());
    }
    Ok(Evaluation { levels, wrong })
}

fn submission(
    side: &Side,
    which: &str,
    pair: &Pair,
    dir: &Path,
    enricher: &Enricher,
    config: &Config,
    cross_mailbox: bool,
) -> anyhow::Result<Submission> {
    let at = chrono::DateTime::parse_from_rfc3339(&side.at)
        .with_context(|| format!("pair {}: {which}.at is not RFC 3339", pair.id))?;
    let mut media = Vec::new();
    for p in &side.photos {
        let bytes = std::fs::read(dir.join(p))
            .with_context(|| format!("pair {}: cannot read {p}", pair.id))?;
        let content_type = match p.rsplit('.').next() {
            Some("png") => "image/png",
            Some("webp") => "image/webp",
            _ => "image/jpeg",
        };
        media.push(Media {
            sha256: sha256_hex(&bytes),
            content_type: content_type.into(),
            size: bytes.len() as u64,
            name: p.rsplit('/').next().map(String::from),
            phash: photo::phash(&bytes),
        });
    }
    let email = side.channel == "email";
    let (channel, kind) = match side.channel.as_str() {
        // The same message in two mailboxes is two mail channels.
        "email" if cross_mailbox => (format!("mail-{which}"), "imap"),
        "email" => ("mail".into(), "imap"),
        "facebook" => ("facebook".into(), "facebook"),
        other => (other.to_string(), "feed"),
    };
    let external_id = match (&side.message_id, email) {
        (Some(m), true) => m.clone(),
        _ => format!("{}-{which}", pair.id),
    };
    let mut draft = Draft {
        submitted_at: Some(at),
        title: side.title.clone().unwrap_or_default(),
        location: side
            .lat
            .zip(side.lon)
            .map(|(lat, lon)| Location::new(lat, lon, LocationSource::Device)),
        media,
        ..Draft::from_text(
            &external_id,
            &side.reporter,
            &side.text,
            &config.daemon.default_category,
        )
    };
    if let Some(code) = &side.category {
        draft.category = Category {
            code: code.clone(),
            source: CategorySource::Channel,
            score: 1.0,
        };
    }
    enricher.apply(&mut draft);
    draft.text_key = draft.dedupe_key();
    let raw = serde_json::to_vec(&serde_json::json!({"pair": pair.id, "side": which}))?;
    Ok(Submission {
        channel,
        kind: kind.into(),
        raw_sha256: sha256_hex(&raw),
        raw,
        source_ref: None,
        received_at: at,
        body: SubmissionBody::Report(Box::new(draft)),
        acknowledge: false,
    })
}

pub fn print(e: &Evaluation, verbose: bool) {
    println!(
        "{:<16} {:>5} {:>4} {:>4} {:>4} {:>4} {:>9} {:>7}",
        "level", "pairs", "tp", "fp", "fn", "tn", "precision", "recall"
    );
    let mut all = Score::default();
    for (level, s) in &e.levels {
        println!(
            "{:<16} {:>5} {:>4} {:>4} {:>4} {:>4} {:>9.3} {:>7.3}",
            level,
            s.tp + s.fp + s.fn_ + s.tn,
            s.tp,
            s.fp,
            s.fn_,
            s.tn,
            s.precision(),
            s.recall()
        );
        all.tp += s.tp;
        all.fp += s.fp;
        all.fn_ += s.fn_;
        all.tn += s.tn;
    }
    println!(
        "{:<16} {:>5} {:>4} {:>4} {:>4} {:>4} {:>9.3} {:>7.3}",
        "all",
        all.tp + all.fp + all.fn_ + all.tn,
        all.tp,
        all.fp,
        all.fn_,
        all.tn,
        all.precision(),
        all.recall()
    );
    if verbose {
        for w in &e.wrong {
            println!("  {w}");
        }
    } else if !e.wrong.is_empty() {
        println!(
            "{} pairs judged otherwise than labelled (--verbose lists them)",
            e.wrong.len()
        );
    }
}

//! The one way in: every channel hands an [`Envelope`] to [`Intake::submit`] and acknowledges
//! upstream only after the receipt comes back (the receipt means: committed).

use crate::channels::{Envelope, email};
use crate::config::{ChannelKind, Config, EmailConfig};
use crate::media::MediaStore;
use crate::pipeline::{Draft, sha256_hex};
use crate::store::{Receipt, Store, StoreError, Submission, SubmissionBody};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot store media: {0}")]
    Media(std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

/// Said in the reason of a quarantined item whose raw bytes are only a prefix: `quarantine retry`
/// cannot make a report from it.
pub const PARTIAL_RAW: &str = "its first 64 KiB are kept here";

/// Per-channel parsing rules, taken from config when the channel starts.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseRules {
    pub email: EmailConfig,
    /// The channel acknowledges new reports (it has an `[ack]` table): the writer records an
    /// acknowledgement to send with each new report.
    pub acknowledge: bool,
    /// Set for Facebook channels.
    pub facebook: Option<crate::channels::facebook::Rules>,
    /// Set for feed channels (for `quarantine retry`: the poller reads its own items).
    pub feed: Option<crate::config::FeedConfig>,
}

pub struct Intake {
    store: Store,
    media: Arc<MediaStore>,
    tz: chrono_tz::Tz,
    default_category: String,
    email_defaults: std::sync::RwLock<EmailConfig>,
    health: crate::health::Health,
    webhooks: crate::channels::facebook::Webhooks,
    classifier: Arc<crate::pipeline::enrich::Enricher>,
}

impl Intake {
    pub fn new(config: &Config, store: Store) -> Self {
        Self {
            health: crate::health::Health::with_store(store.status()),
            store,
            media: Arc::new(MediaStore::new(config.media_dir())),
            tz: config.tz,
            default_category: config.daemon.default_category.clone(),
            email_defaults: std::sync::RwLock::new(config.email_defaults()),
            webhooks: Default::default(),
            classifier: Arc::new(crate::pipeline::enrich::Enricher::new(&config.daemon)),
        }
    }

    /// Sets a draft's category by the configured keyword rules (a channel's own category stays),
    /// its place, ward and unit, and what the dedupe compares.
    pub fn classify(&self, draft: &mut Draft) {
        self.classifier.apply(draft);
    }

    /// The same, from the citizen's own words given apart from the draft.
    pub fn classify_text(&self, draft: &mut Draft, text: &str) {
        self.classifier.apply_text(draft, text);
    }

    /// Where attachments are kept (channels that download media write there too).
    pub fn media(&self) -> &Arc<MediaStore> {
        &self.media
    }

    /// The channels taking webhooks now (read by the HTTP server).
    pub fn webhooks(&self) -> &crate::channels::facebook::Webhooks {
        &self.webhooks
    }

    pub fn tz(&self) -> chrono_tz::Tz {
        self.tz
    }

    pub fn default_category(&self) -> &str {
        &self.default_category
    }

    /// Where channels say how they are doing (read by `/readyz`).
    pub fn health(&self) -> &crate::health::Health {
        &self.health
    }

    /// The daemon-wide e-mail limits a channel starts from.
    pub fn email_defaults(&self) -> EmailConfig {
        self.email_defaults.read().expect("email lock").clone()
    }

    /// After a reload: channels started from now on use these (own addresses may have changed
    /// with the channels' `[ack] from`).
    pub fn set_email_defaults(&self, email: EmailConfig) {
        *self.email_defaults.write().expect("email lock") = email;
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Parses, keeps media, commits; the receipt says what became of the item. An item that cannot
    /// be parsed is quarantined (that is a receipt too: it is stored, and the channel may ack it).
    pub async fn submit(&self, env: Envelope, rules: &ParseRules) -> Result<Receipt, IntakeError> {
        let received_at = chrono::Utc::now().with_timezone(&self.tz).fixed_offset();
        let raw = Arc::new(env.raw);
        let parsed = self.parse(env.kind, raw.clone(), rules).await?;
        let raw = Arc::try_unwrap(raw).unwrap_or_else(|a| (*a).clone());
        let body = match parsed {
            Outcome::Report(draft) => SubmissionBody::Report(draft),
            Outcome::Automated {
                rule,
                external_id,
                bounce,
            } => SubmissionBody::Automated {
                external_id,
                rule,
                bounce,
            },
            Outcome::Reject(reason) => SubmissionBody::Quarantine { reason },
            Outcome::FeedItem { key, draft } => SubmissionBody::FeedItem { key, draft },
            Outcome::Fragment {
                external_id,
                psid,
                fragment,
            } => SubmissionBody::Fragment {
                external_id,
                psid,
                fragment,
                update_window_ms: update_window_ms(rules),
            },
            Outcome::Edit {
                external_id,
                psid,
                mid,
                text,
            } => SubmissionBody::Edit {
                external_id,
                psid,
                mid,
                text,
                update_window_ms: update_window_ms(rules),
            },
        };
        let submission = Submission {
            channel: env.channel,
            kind: env.kind.as_str().to_string(),
            raw_sha256: sha256_hex(&raw),
            raw,
            source_ref: env.source_ref,
            received_at,
            body,
            acknowledge: rules.acknowledge,
        };
        Ok(self.store.submit(submission).await?)
    }

    /// Stores an item as quarantined without parsing it (a channel already knows it cannot be).
    pub async fn quarantine(&self, env: Envelope, reason: String) -> Result<Receipt, IntakeError> {
        let received_at = chrono::Utc::now().with_timezone(&self.tz).fixed_offset();
        let submission = Submission {
            channel: env.channel,
            kind: env.kind.as_str().to_string(),
            raw_sha256: sha256_hex(&env.raw),
            raw: env.raw,
            source_ref: env.source_ref,
            received_at,
            body: SubmissionBody::Quarantine { reason },
            acknowledge: false,
        };
        Ok(self.store.submit(submission).await?)
    }

    /// Re-runs the parser on a quarantined item (after a fix or a raised limit).
    pub async fn retry(
        &self,
        inbox_id: i64,
        channel: String,
        kind: ChannelKind,
        raw: Vec<u8>,
        rules: &ParseRules,
    ) -> Result<Result<Receipt, String>, IntakeError> {
        let raw = Arc::new(raw);
        let parsed = self.parse(kind, raw.clone(), rules).await?;
        match parsed {
            Outcome::Reject(reason) => Ok(Err(reason)),
            // Left in quarantine: a machine's mail is not a report however often it is retried.
            Outcome::Automated { rule, .. } => {
                Ok(Err(format!("automated mail ({rule}), not a report")))
            }
            Outcome::Fragment { .. } | Outcome::Edit { .. } => Ok(Err(
                "a Messenger message: the webhook takes it again when Meta re-sends it".into(),
            )),
            Outcome::Report(_) | Outcome::FeedItem { .. } => {
                let (draft, key) = match parsed_report(parsed) {
                    Some(x) => x,
                    None => return Ok(Err("nothing to store".into())),
                };
                let raw = Arc::try_unwrap(raw).unwrap_or_else(|a| (*a).clone());
                let received_at = chrono::Utc::now().with_timezone(&self.tz).fixed_offset();
                let submission = Submission {
                    channel,
                    kind: kind.as_str().to_string(),
                    raw_sha256: sha256_hex(&raw),
                    raw,
                    source_ref: None,
                    received_at,
                    body: SubmissionBody::Retry {
                        inbox_id,
                        draft,
                        key,
                    },
                    acknowledge: rules.acknowledge,
                };
                Ok(Ok(self.store.submit(submission).await?))
            }
        }
    }

    /// Runs the kind's parser off the async threads and writes the media it found. A parser panic
    /// on hostile input quarantines the item instead of taking the channel down.
    async fn parse(
        &self,
        kind: ChannelKind,
        raw: Arc<Vec<u8>>,
        rules: &ParseRules,
    ) -> Result<Outcome, IntakeError> {
        let rules = rules.clone();
        let tz = self.tz;
        let default_category = self.default_category.clone();
        let media = self.media.clone();
        let classifier = self.classifier.clone();
        let joined = tokio::task::spawn_blocking(move || -> Result<Outcome, std::io::Error> {
            if kind == ChannelKind::Facebook {
                return Ok(facebook_outcome(&raw, &rules));
            }
            if kind == ChannelKind::Feed {
                // Read again with the channel's current settings (a mapping fixed since, say).
                // Photos by URL are not fetched here: the report lists none.
                return Ok(match &rules.feed {
                    Some(cfg) => {
                        match crate::channels::feed::read_item(&raw, cfg, tz, &default_category) {
                            Ok((mut draft, text, key)) => {
                                classifier.apply_text(&mut draft, &text);
                                Outcome::FeedItem {
                                    key,
                                    draft: Box::new(draft),
                                }
                            }
                            Err(reason) => Outcome::Reject(reason),
                        }
                    }
                    None => Outcome::Reject("the feed channel is no longer configured".into()),
                });
            }
            let parsed = email::parse(&raw, &rules.email, tz, &default_category);
            Ok(match parsed {
                Ok(email::Parsed::Report(mut draft, blobs)) => {
                    for blob in &blobs {
                        media.put(blob)?;
                    }
                    classifier.apply(&mut draft);
                    Outcome::Report(draft)
                }
                Ok(email::Parsed::Automated {
                    rule,
                    external_id,
                    bounce,
                }) => Outcome::Automated {
                    rule: rule.to_string(),
                    external_id,
                    bounce,
                },
                Err(reject) => Outcome::Reject(reject.to_string()),
            })
        })
        .await;
        match joined {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(io)) => Err(IntakeError::Media(io)),
            Err(e) if e.is_panic() => Ok(Outcome::Reject(
                "the parser failed on this input (internal error); raw kept for a fix and `phananh quarantine retry`".into(),
            )),
            Err(e) => Err(IntakeError::Invalid(format!("parser task stopped: {e}"))),
        }
    }
}

fn update_window_ms(rules: &ParseRules) -> i64 {
    rules
        .facebook
        .as_ref()
        .map_or(0, |f| f.update_window.as_millis() as i64)
}

/// A stored webhook event read into what the writer does with it.
fn facebook_outcome(raw: &[u8], rules: &ParseRules) -> Outcome {
    use crate::channels::facebook::{self, Parsed};
    let external_id =
        facebook::external_id(raw).unwrap_or_else(|| format!("sha256:{}", sha256_hex(raw)));
    match facebook::parse(raw) {
        Ok(Parsed::Fragment { psid, fragment }) => Outcome::Fragment {
            external_id,
            psid,
            fragment,
        },
        Ok(Parsed::Edit { psid, mid, text }) => Outcome::Edit {
            external_id,
            psid,
            mid,
            text,
        },
        Ok(Parsed::Other { rule }) => Outcome::Automated {
            rule: rule.to_string(),
            external_id,
            bounce: None,
        },
        Ok(Parsed::Feed(item)) => feed_outcome(item, external_id, rules),
        Err(reason) => Outcome::Reject(reason),
    }
}

/// A page feed change: a visitor's post (or comment, when asked) is gathered like a message from
/// its author; the page's own posts, reactions, removals and what the channel does not take are
/// kept with their rule.
fn feed_outcome(
    item: crate::channels::facebook::FeedItem,
    external_id: String,
    rules: &ParseRules,
) -> Outcome {
    use crate::channels::facebook::{Attachment, Fragment};
    use crate::config::FeedMode;
    let other = |rule: &str| Outcome::Automated {
        rule: rule.to_string(),
        external_id: external_id.clone(),
        bounce: None,
    };
    let Some(fb) = &rules.facebook else {
        return other("feed");
    };
    let comment = item.item == "comment";
    let taken = match fb.feed {
        FeedMode::Off => false,
        FeedMode::Posts => !comment,
        FeedMode::PostsAndComments => true,
    };
    let Some(author) = item.from_id.clone().filter(|_| taken) else {
        return other("feed");
    };
    if author == fb.page_id {
        return other("own_post");
    }
    let mid = format!("feed:{}", item.object_id);
    match item.verb.as_str() {
        "add" => Outcome::Fragment {
            external_id,
            psid: author,
            fragment: Fragment {
                mid,
                timestamp_ms: item.created_time * 1000,
                text: item.message,
                attachments: item
                    .photos
                    .into_iter()
                    .map(|url| Attachment {
                        kind: "image".into(),
                        url: Some(url),
                        title: None,
                    })
                    .collect(),
                location: None,
            },
        },
        "edited" | "edit" => Outcome::Edit {
            external_id,
            psid: author,
            mid,
            text: item.message.unwrap_or_default(),
        },
        _ => other("feed_removed"),
    }
}

/// A report's draft, and its key when it is a feed item.
fn parsed_report(o: Outcome) -> Option<(Box<Draft>, Option<String>)> {
    match o {
        Outcome::Report(d) => Some((d, None)),
        Outcome::FeedItem { key, draft } => Some((draft, Some(key))),
        _ => None,
    }
}

/// What parsing made of an item.
enum Outcome {
    /// A feed item read again (`quarantine retry`).
    FeedItem {
        key: String,
        draft: Box<Draft>,
    },
    Report(Box<Draft>),
    Automated {
        rule: String,
        external_id: String,
        bounce: Option<email::Bounce>,
    },
    Fragment {
        external_id: String,
        psid: String,
        fragment: crate::channels::facebook::Fragment,
    },
    Edit {
        external_id: String,
        psid: String,
        mid: String,
        text: String,
    },
    Reject(String),
}

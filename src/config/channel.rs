//! `channels/NAME.toml`: one file per channel, `kind` picks the type.

use super::units;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The kinds this build knows. A new kind is one variant here and one folder under src/channels/.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    Maildir,
}

impl ChannelKind {
    pub const ALL: &[ChannelKind] = &[ChannelKind::Maildir];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Maildir => "maildir",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }

    /// True for kinds whose payload is an RFC 5322 message.
    pub fn is_email(self) -> bool {
        matches!(self, ChannelKind::Maildir)
    }
}

impl std::fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A loaded, validated channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelConfig {
    pub name: String,
    pub path: PathBuf,
    pub settings: ChannelSettings,
}

impl ChannelConfig {
    pub fn kind(&self) -> ChannelKind {
        match self.settings {
            ChannelSettings::Maildir(_) => ChannelKind::Maildir,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChannelSettings {
    Maildir(MaildirConfig),
}

/// What to do with a message once it is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterIngest {
    /// Move new/NAME to cur/NAME:2,S (the message is "seen").
    Seen,
    /// Move it to a Maildir++ subfolder (e.g. `.Processed`), created if missing.
    Move(String),
}

impl<'de> Deserialize<'de> for AfterIngest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "seen" {
            return Ok(AfterIngest::Seen);
        }
        match s.strip_prefix("move:") {
            Some(folder)
                if !folder.is_empty()
                    && !folder.contains('/')
                    && folder != "."
                    && folder != ".." =>
            {
                Ok(AfterIngest::Move(folder.to_string()))
            }
            _ => Err(serde::de::Error::custom(format!(
                "invalid after_ingest {s:?}; write \"seen\" or \"move:.Processed\" (a Maildir++ folder name without '/')"
            ))),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MaildirConfig {
    pub kind: String,
    /// The Maildir root (holding new/, cur/, tmp/). Relative to this file's folder.
    pub path: PathBuf,
    #[serde(default = "default_after_ingest")]
    pub after_ingest: AfterIngest,
    /// A full scan of new/ runs this often even when inotify is quiet (missed events, overflow).
    #[serde(
        default = "default_scan_interval",
        deserialize_with = "units::duration"
    )]
    pub scan_interval: Duration,
    /// Messages parsed and committed at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default, deserialize_with = "opt_size")]
    pub max_message_size: Option<u64>,
    #[serde(default, deserialize_with = "opt_size")]
    pub max_attachment_size: Option<u64>,
    pub max_attachments: Option<usize>,
}

impl MaildirConfig {
    /// The daemon-wide e-mail limits with this channel's overrides applied.
    pub fn limits(&self, defaults: &super::EmailConfig) -> super::EmailConfig {
        super::EmailConfig {
            max_message_size: self.max_message_size.unwrap_or(defaults.max_message_size),
            max_attachment_size: self
                .max_attachment_size
                .unwrap_or(defaults.max_attachment_size),
            max_attachments: self.max_attachments.unwrap_or(defaults.max_attachments),
            own_addresses: defaults.own_addresses.clone(),
        }
    }
}

fn opt_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    units::size(d).map(Some)
}

fn default_after_ingest() -> AfterIngest {
    AfterIngest::Seen
}
fn default_scan_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_concurrency() -> usize {
    32
}

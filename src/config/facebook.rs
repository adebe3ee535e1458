//! `kind = "facebook"`: a Facebook page's Messenger conversations (and optionally its feed),
//! delivered by Meta's webhooks to `/webhooks/facebook/{channel}`.

use super::secrets::SecretRef;
use super::units;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Which page feed changes become reports.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum FeedMode {
    #[default]
    #[serde(rename = "off")]
    Off,
    #[serde(rename = "posts")]
    Posts,
    #[serde(rename = "posts+comments")]
    PostsAndComments,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FacebookConfig {
    pub kind: String,
    /// With no item for this long, the channel shows as quiet (degraded) in health and a WARN
    /// is logged: a mailbox that moved, a webhook no longer subscribed, a feed that stopped.
    #[serde(default, deserialize_with = "super::units::opt_duration")]
    pub quiet_after: Option<std::time::Duration>,
    /// The page's numeric id; events for other pages are refused.
    pub page_id: String,
    /// The app secret that signs every POST (`X-Hub-Signature-256`). The file may hold two lines
    /// while the secret is rotated: either signature is accepted.
    pub app_secret_file: Option<PathBuf>,
    pub app_secret_env: Option<String>,
    /// What the app dashboard sends in the subscription handshake.
    pub verify_token_file: Option<PathBuf>,
    pub verify_token_env: Option<String>,
    /// For the Graph API (replies, health checks): optional until those are configured.
    pub page_access_token_file: Option<PathBuf>,
    pub page_access_token_env: Option<String>,
    /// Visitors' posts (and comments) on the page as reports too; the app must be subscribed to
    /// the page's `feed`.
    #[serde(default)]
    pub feed: FeedMode,
    /// Ask the Graph API for each Messenger sender's name (needs the page token and Meta's
    /// "Business Asset User Profile Access"); otherwise the sender is known by PSID only.
    #[serde(default)]
    pub fetch_names: bool,
    /// Answer each new report in Messenger with its tracking code (needs the page token).
    #[serde(default)]
    pub reply: bool,
    /// The reply; placeholders as in mail acknowledgements (`{code}`, `{title}`, ...).
    #[serde(default = "default_reply_text")]
    pub reply_text: String,
    /// Send API calls per second for this page, at most.
    #[serde(default = "default_reply_rate")]
    pub reply_rate_per_second: u32,
    #[serde(default = "default_graph_base")]
    pub graph_api_base: String,
    #[serde(default = "default_graph_version")]
    pub graph_api_version: String,
    /// A sender quiet this long closes their conversation into one report.
    #[serde(default = "default_quiet", deserialize_with = "units::duration")]
    pub assemble_quiet: Duration,
    /// A conversation is closed this long after its first message, however chatty.
    #[serde(default = "default_max", deserialize_with = "units::duration")]
    pub assemble_max: Duration,
    /// A message this soon after a report was made from the same sender adds to it
    /// (`report.updated`) instead of opening a new one.
    #[serde(
        default = "default_update_window",
        deserialize_with = "units::duration"
    )]
    pub update_window: Duration,
    /// Media are downloaded only from these hosts and their subdomains, over HTTPS.
    #[serde(default = "default_media_hosts")]
    pub media_hosts: Vec<String>,
    #[serde(default = "default_max_media", deserialize_with = "units::size")]
    pub max_media_size: u64,
    /// Larger webhook bodies are refused with 413 before anything is read into memory.
    #[serde(default = "default_max_body", deserialize_with = "units::size")]
    pub max_body_size: u64,
}

impl FacebookConfig {
    pub fn app_secret(&self) -> SecretRef {
        pick(&self.app_secret_file, &self.app_secret_env)
    }
    pub fn verify_token(&self) -> SecretRef {
        pick(&self.verify_token_file, &self.verify_token_env)
    }
    pub fn page_access_token(&self) -> Option<SecretRef> {
        (self.page_access_token_file.is_some() || self.page_access_token_env.is_some())
            .then(|| pick(&self.page_access_token_file, &self.page_access_token_env))
    }

    /// Problems serde cannot see, as (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for (key, file, env) in [
            (
                "app_secret_file",
                &self.app_secret_file,
                &self.app_secret_env,
            ),
            (
                "verify_token_file",
                &self.verify_token_file,
                &self.verify_token_env,
            ),
        ] {
            match (file, env) {
                (Some(_), Some(_)) => {
                    out.push((key, format!("set {key} or its _env form, not both")))
                }
                (None, None) => out.push((
                    "page_id",
                    format!("missing {key} (or its _env form): every webhook needs it"),
                )),
                _ => {}
            }
        }
        if self.page_access_token_file.is_some() && self.page_access_token_env.is_some() {
            out.push((
                "page_access_token_file",
                "set page_access_token_file or page_access_token_env, not both".into(),
            ));
        }
        if self.fetch_names && self.page_access_token().is_none() {
            out.push((
                "fetch_names",
                "fetch_names = true needs page_access_token_file (or page_access_token_env)".into(),
            ));
        }
        if self.reply && self.page_access_token().is_none() {
            out.push((
                "reply",
                "reply = true needs page_access_token_file (or page_access_token_env)".into(),
            ));
        }
        if let Err(msg) = super::ack::check_template(&self.reply_text) {
            out.push(("reply_text", msg));
        }
        if self.reply_text.chars().count() > 1500 {
            out.push((
                "reply_text",
                "reply_text is limited to 1500 characters (Messenger takes 2000 with the code filled in)".into(),
            ));
        }
        if self.reply_rate_per_second == 0 {
            out.push((
                "reply_rate_per_second",
                "reply_rate_per_second must be at least 1".into(),
            ));
        }
        if self.page_id.is_empty() || !self.page_id.chars().all(|c| c.is_ascii_digit()) {
            out.push((
                "page_id",
                format!("page_id {:?} must be the page's numeric id", self.page_id),
            ));
        }
        if !(self.graph_api_base.starts_with("https://") || is_loopback_url(&self.graph_api_base)) {
            out.push((
                "graph_api_base",
                "graph_api_base must be https:// (plain http only to a loopback test server)"
                    .into(),
            ));
        }
        if self.assemble_quiet.is_zero() || self.assemble_max < self.assemble_quiet {
            out.push((
                "assemble_max",
                "assemble_quiet must be more than 0s and assemble_max at least assemble_quiet"
                    .into(),
            ));
        }
        out
    }
}

fn pick(file: &Option<PathBuf>, env: &Option<String>) -> SecretRef {
    match (file, env) {
        (Some(p), _) => SecretRef::File(p.clone()),
        (None, Some(v)) => SecretRef::Env(v.clone()),
        (None, None) => SecretRef::Env(String::new()),
    }
}

fn is_loopback_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', ':']).next().unwrap_or_default();
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

pub const DEFAULT_REPLY: &str = "Trung tâm đã tiếp nhận phản ánh của bạn. Mã theo dõi: {code}.\n\
Bạn có thể gửi thêm ảnh hoặc thông tin ngay trong cuộc trò chuyện này; nội dung sẽ được bổ sung vào phản ánh.\n\
Đây là tin nhắn tự động.";

fn default_reply_text() -> String {
    DEFAULT_REPLY.into()
}
fn default_reply_rate() -> u32 {
    20
}
fn default_graph_base() -> String {
    "https://graph.facebook.com".into()
}
fn default_graph_version() -> String {
    "v25.0".into()
}
fn default_quiet() -> Duration {
    Duration::from_secs(180)
}
fn default_max() -> Duration {
    Duration::from_secs(900)
}
fn default_update_window() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_media_hosts() -> Vec<String> {
    vec!["fbcdn.net".into(), "fbsbx.com".into()]
}
fn default_max_media() -> u64 {
    25_000_000
}
fn default_max_body() -> u64 {
    4_000_000
}

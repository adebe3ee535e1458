//! `[ack]` in a mail channel's file: the acknowledgement a citizen gets, and the SMTP relay it
//! goes through (`[ack.smtp]`).

use super::TlsMode;
use super::units;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Words a template may use, each written `{word}`.
pub const PLACEHOLDERS: &[&str] = &["code", "title", "received_at", "name", "channel"];

pub const DEFAULT_SUBJECT: &str = "[{code}] Đã tiếp nhận phản ánh: {title}";

pub const DEFAULT_BODY: &str = "\
Kính gửi {name},

Chúng tôi đã tiếp nhận phản ánh của Quý vị lúc {received_at}.

Mã theo dõi: {code}
Nội dung: {title}

Phản ánh đã được chuyển đến cơ quan có thẩm quyền để xem xét, xử lý.
Để bổ sung thông tin hoặc hình ảnh, Quý vị chỉ cần trả lời thư này và giữ
nguyên mã {code} trong tiêu đề; nội dung bổ sung sẽ được gộp vào phản ánh trên.

Đây là thư trả lời tự động.
";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AckConfig {
    /// `Name <address>` the acknowledgement comes from. It counts as one of the centre's own
    /// addresses, so mail from it coming back is never a report.
    pub from: String,
    /// Where a citizen's answer goes, when not to `from`.
    pub reply_to: Option<String>,
    #[serde(default = "default_subject")]
    pub subject: String,
    /// The body; `body_file` reads it from a file instead (loaded and checked with the config).
    pub body: Option<String>,
    pub body_file: Option<PathBuf>,
    /// Mail written longer ago than this is never acknowledged (old backlog, delayed mail).
    #[serde(default = "default_max_age", deserialize_with = "units::duration")]
    pub max_age: Duration,
    /// More acknowledgements to one address in an hour are suppressed (recorded, not sent).
    #[serde(default = "default_per_address")]
    pub per_address_per_hour: u32,
    /// More to one domain in an hour wait for the next free slot.
    #[serde(default = "default_per_domain")]
    pub per_domain_per_hour: u32,
    pub smtp: SmtpConfig,
}

impl AckConfig {
    /// The body template (after the loader read `body_file`).
    pub fn body(&self) -> &str {
        self.body.as_deref().unwrap_or(DEFAULT_BODY)
    }

    /// The sender's address, lowercase (validated: `from` parses).
    pub fn from_address(&self) -> Option<String> {
        self.from
            .parse::<lettre::message::Mailbox>()
            .ok()
            .map(|m| m.email.to_string().to_ascii_lowercase())
    }

    /// Problems serde cannot see, as (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            out.push((
                "from",
                format!(
                    "from {:?} is not an address; write \"Trung tâm <dttm@example.gov.vn>\"",
                    self.from
                ),
            ));
        }
        if let Some(r) = &self.reply_to
            && r.parse::<lettre::message::Mailbox>().is_err()
        {
            out.push(("reply_to", format!("reply_to {r:?} is not an address")));
        }
        if self.body.is_some() && self.body_file.is_some() {
            out.push(("body_file", "set body or body_file, not both".into()));
        }
        for (key, text) in [("subject", self.subject.as_str()), ("body", self.body())] {
            if let Err(msg) = check_template(text) {
                out.push((key, msg));
            }
        }
        if self.per_address_per_hour == 0 {
            out.push((
                "per_address_per_hour",
                "per_address_per_hour must be at least 1".into(),
            ));
        }
        if self.per_domain_per_hour == 0 {
            out.push((
                "per_domain_per_hour",
                "per_domain_per_hour must be at least 1".into(),
            ));
        }
        out.extend(self.smtp.problems());
        out
    }
}

/// Every `{word}` must be a known placeholder and every brace closed.
pub fn check_template(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err("a `{` is never closed".into());
        };
        let word = &after[..close];
        if !PLACEHOLDERS.contains(&word) {
            return Err(format!(
                "unknown placeholder {{{word}}}; known: {}",
                PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// Defaults to 465 for `tls = "implicit"`, 587 for `"starttls"`, 25 for `"none"`.
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: TlsMode,
    #[serde(default)]
    pub allow_insecure: bool,
    pub ca_file: Option<PathBuf>,
    /// Without a username the relay is used without authentication (a local MTA).
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    #[serde(default = "default_smtp_timeout", deserialize_with = "units::duration")]
    pub timeout: Duration,
    /// The name said in EHLO; the machine's host name when unset.
    pub hello_name: Option<String>,
}

impl SmtpConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            TlsMode::Implicit => 465,
            TlsMode::Starttls => 587,
            TlsMode::None => 25,
        })
    }

    /// The password reference, when the relay needs one.
    pub fn password(&self) -> Option<super::secrets::SecretRef> {
        match (&self.password_file, &self.password_env) {
            (Some(p), _) => Some(super::secrets::SecretRef::File(p.clone())),
            (None, Some(v)) => Some(super::secrets::SecretRef::Env(v.clone())),
            (None, None) => None,
        }
    }

    pub(super) fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match (&self.username, &self.password_file, &self.password_env) {
            (_, Some(_), Some(_)) => out.push((
                "password_file",
                "set password_file or password_env, not both".to_string(),
            )),
            (Some(_), None, None) => out.push((
                "username",
                "no password: add password_file = \"/etc/phananh/secrets/smtp\" or password_env = \"VARIABLE\""
                    .to_string(),
            )),
            (None, Some(_), _) | (None, _, Some(_)) => out.push((
                "password_file",
                "a password without a username; add username".to_string(),
            )),
            _ => {}
        }
        if let Some(msg) = super::channel::insecure(&self.host, self.tls, self.allow_insecure) {
            out.push(("tls", msg));
        }
        if self.timeout.is_zero() {
            out.push(("timeout", "timeout must be more than 0s".into()));
        }
        out
    }
}

fn default_subject() -> String {
    DEFAULT_SUBJECT.into()
}
fn default_max_age() -> Duration {
    Duration::from_secs(3 * 24 * 3600)
}
fn default_per_address() -> u32 {
    5
}
fn default_per_domain() -> u32 {
    1000
}
fn default_smtp_timeout() -> Duration {
    Duration::from_secs(30)
}

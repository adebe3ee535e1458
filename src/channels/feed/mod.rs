//! The `feed` channel: a portal's or an app's reports, polled. Open311 servers are asked by
//! creation window (`start_date`/`end_date`), each window overlapping the last by `overlap`, and
//! paged when `page_size` is set; each page is committed with the feed's new position, so a restart
//! resumes after the last stored page and a request seen twice is stored once.

mod open311;

use crate::config::FeedConfig;
use crate::fetch::Fetcher;
use crate::health::State;
use crate::intake::Intake;
use crate::pipeline::{Blob, sha256_hex};
use crate::report::{Media, OmittedMedia};
use crate::store::feeds::{self, FeedCursor};
use crate::store::{Submission, SubmissionBody};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Attempts at one page before the round gives up (the next round starts from the same place).
const PAGE_ATTEMPTS: u32 = 4;

pub async fn run(
    name: &str,
    cfg: &FeedConfig,
    intake: Arc<Intake>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let poller = Poller::new(name, cfg, intake.clone())?;
    tracing::info!(channel = %name, every = ?cfg.poll_interval, "Feed channel started.");
    loop {
        let wait = match poller.poll(&cancel).await {
            Ok(stored) => {
                if !cancel.is_cancelled() {
                    intake.health().set(name, State::Running, None);
                }
                if stored > 0 {
                    tracing::info!(channel = %name, items = stored, "Feed items stored.");
                }
                cfg.poll_interval
            }
            Err(Failure::Operator(e)) => {
                tracing::error!(channel = %name, error = %e, "The feed refused our credentials; fix auth_header_file and reload.");
                intake.health().set(name, State::NeedsOperator, Some(e));
                cfg.poll_interval.max(Duration::from_secs(300))
            }
            Err(Failure::Later(e, wait)) => {
                tracing::warn!(channel = %name, error = %e, retry_in = ?wait, "Feed not read this round; nothing skipped, trying again.");
                intake.health().set(name, State::Reconnecting, Some(e));
                wait
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

enum Failure {
    /// 401/403: only the operator can fix it.
    Operator(String),
    /// Try again after this long; the position has not moved past anything unread.
    Later(String, Duration),
}

struct Poller {
    name: String,
    cfg: FeedConfig,
    intake: Arc<Intake>,
    client: reqwest::Client,
    limiter: DefaultDirectRateLimiter,
    fetcher: Fetcher,
}

impl Poller {
    fn new(name: &str, cfg: &FeedConfig, intake: Arc<Intake>) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::fetch::tls_config())
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        let rate = NonZeroU32::new(cfg.rate_per_second.max(1)).expect("at least 1");
        Ok(Self {
            name: name.to_string(),
            cfg: cfg.clone(),
            intake,
            client,
            limiter: RateLimiter::direct(Quota::per_second(rate)),
            fetcher: Fetcher::new(&cfg.media_hosts, cfg.max_media_size, cfg.timeout),
        })
    }

    /// One round: every page of the current window; returns the items newly stored.
    async fn poll(&self, cancel: &CancellationToken) -> Result<usize, Failure> {
        let tz = self.intake.tz();
        let stamp = |t: chrono::DateTime<chrono::Utc>| {
            t.with_timezone(&tz)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
        };
        let parse = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .ok()
        };
        let now = chrono::Utc::now();
        let overlap = chrono::Duration::from_std(self.cfg.overlap).unwrap_or_default();
        let name = self.name.clone();
        let store = self.intake.store().clone();
        let cur = tokio::task::spawn_blocking(move || {
            let conn = store.reader()?;
            feeds::cursor(&conn, &name)
        })
        .await
        .map_err(|e| Failure::Later(e.to_string(), Duration::from_secs(5)))?
        .map_err(|e| Failure::Later(e.to_string(), Duration::from_secs(5)))?;
        let backlog = now - chrono::Duration::from_std(self.cfg.backlog).unwrap_or_default();
        let (start, end, mut page) = match &cur {
            None => (backlog, now, 1),
            Some(c) => {
                let done = parse(&c.done_until).unwrap_or(backlog);
                match c.pending_end.as_deref().and_then(parse) {
                    Some(pending) => (done - overlap, pending, c.next_page.max(1)),
                    None => (done - overlap, now, 1),
                }
            }
        };
        let mut stored = 0;
        loop {
            if cancel.is_cancelled() {
                return Ok(stored);
            }
            let body = self.page(&stamp(start), &stamp(end), page).await?;
            let raws = open311::page(&body).map_err(|e| {
                Failure::Later(
                    format!("page {page}: {e}; the page is asked again"),
                    self.cfg.poll_interval.min(Duration::from_secs(30)),
                )
            })?;
            let last = self.cfg.page_size == 0 || raws.len() < self.cfg.page_size as usize;
            let mut items = Vec::with_capacity(raws.len());
            for raw in raws {
                items.push(self.submission(raw.raw).await);
            }
            let cursor = FeedCursor {
                channel: self.name.clone(),
                // While paging, the window's start is kept: a restart asks the rest of it.
                done_until: if last {
                    stamp(end)
                } else {
                    stamp(start + overlap)
                },
                pending_end: (!last).then(|| stamp(end)),
                next_page: if last { 1 } else { page + 1 },
            };
            let receipts = self
                .intake
                .store()
                .submit_page(items, cursor)
                .await
                .map_err(|e| Failure::Later(e.to_string(), Duration::from_secs(5)))?;
            stored += receipts.iter().filter(|r| !r.redelivered).count();
            if last {
                return Ok(stored);
            }
            page += 1;
        }
    }

    /// One page's bytes, with retries for what may pass (429/503 after Retry-After, 5xx,
    /// timeouts), the response capped at `max_response_size` while it streams.
    async fn page(&self, start: &str, end: &str, page: u32) -> Result<Vec<u8>, Failure> {
        let mut url = reqwest::Url::parse(&self.cfg.url)
            .map_err(|e| Failure::Operator(format!("url: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("start_date", start)
                .append_pair("end_date", end);
            if self.cfg.page_size > 0 {
                q.append_pair("page", &page.to_string())
                    .append_pair("page_size", &self.cfg.page_size.to_string());
            }
        }
        let mut last_error = String::new();
        for attempt in 1..=PAGE_ATTEMPTS {
            self.limiter.until_ready().await;
            let mut req = self.client.get(url.clone());
            if let Some(file) = &self.cfg.auth_header_file {
                let line = std::fs::read_to_string(file)
                    .map_err(|e| Failure::Operator(format!("cannot read auth_header_file: {e}")))?;
                let (k, v) = line.trim().split_once(':').ok_or_else(|| {
                    Failure::Operator("auth_header_file must hold one `Name: value` line".into())
                })?;
                req = req.header(k.trim(), v.trim());
            }
            let backoff =
                crate::backoff::delay(attempt, Duration::from_secs(1), Duration::from_secs(60));
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last_error = format!(
                        "page {page}: {}",
                        if e.is_timeout() {
                            "timed out"
                        } else {
                            "cannot connect"
                        }
                    );
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            let status = resp.status().as_u16();
            match status {
                200 => {}
                401 | 403 => {
                    return Err(Failure::Operator(format!("HTTP {status}")));
                }
                429 | 503 => {
                    let wait = retry_after(resp.headers()).unwrap_or(backoff);
                    // A long wait ends the round; a short one is waited here.
                    if wait > Duration::from_secs(30) {
                        return Err(Failure::Later(format!("HTTP {status}, Retry-After"), wait));
                    }
                    last_error = format!("HTTP {status}");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                s if s >= 500 => {
                    last_error = format!("HTTP {status}");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
                other => {
                    return Err(Failure::Later(
                        format!("HTTP {other} for page {page}"),
                        Duration::from_secs(300),
                    ));
                }
            }
            match self.body(resp).await {
                Ok(b) => return Ok(b),
                Err(e) => {
                    last_error = e;
                    tokio::time::sleep(backoff).await;
                }
            }
        }
        Err(Failure::Later(last_error, Duration::from_secs(60)))
    }

    async fn body(&self, mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
        let cap = self.cfg.max_response_size;
        if resp.content_length().is_some_and(|n| n > cap) {
            return Err(format!(
                "the response is over max_response_size ({cap} bytes)"
            ));
        }
        let mut out = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|_| "the response broke off".to_string())?
        {
            if (out.len() + chunk.len()) as u64 > cap {
                return Err(format!(
                    "the response went on past max_response_size ({cap} bytes); cut off"
                ));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// An item as the writer takes it: a report (with its photo) or, unreadable, quarantined.
    async fn submission(&self, raw: Vec<u8>) -> Submission {
        let body = match open311::request(
            &raw,
            &self.cfg.service_codes,
            self.intake.tz(),
            self.intake.default_category(),
        ) {
            Ok(mut r) => {
                if let Some(url) = &r.media_url {
                    let (media, omitted) = self.media(url).await;
                    r.draft.media.extend(media);
                    r.draft.omitted_media.extend(omitted);
                }
                SubmissionBody::FeedItem {
                    key: r.key,
                    draft: Box::new(r.draft),
                }
            }
            Err(reason) => SubmissionBody::Quarantine { reason },
        };
        Submission {
            channel: self.name.clone(),
            kind: "feed".into(),
            raw_sha256: sha256_hex(&raw),
            raw,
            source_ref: None,
            received_at: chrono::Utc::now()
                .with_timezone(&self.intake.tz())
                .fixed_offset(),
            body,
            acknowledge: false,
        }
    }

    async fn media(&self, url: &str) -> (Vec<Media>, Vec<OmittedMedia>) {
        let name = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.path_segments()?.next_back().map(str::to_string))
            .filter(|s| !s.is_empty());
        match self.fetcher.get(url).await {
            Ok(got) => {
                let content_type = infer::get(&got.bytes)
                    .map(|t| t.mime_type().to_string())
                    .or(got.content_type)
                    .unwrap_or_else(|| "application/octet-stream".into());
                let blob = Blob {
                    sha256: sha256_hex(&got.bytes),
                    bytes: got.bytes,
                };
                let store = self.intake.media().clone();
                let kept = blob.clone();
                match tokio::task::spawn_blocking(move || store.put(&kept)).await {
                    Ok(Ok(())) => (
                        vec![Media {
                            sha256: blob.sha256,
                            content_type,
                            size: blob.bytes.len() as u64,
                            name,
                            phash: None,
                        }],
                        vec![],
                    ),
                    _ => (vec![], vec![omitted(name, "unavailable", 0)]),
                }
            }
            Err(e) => {
                tracing::warn!(channel = %self.name, error = %e, "Feed photo not kept.");
                let (reason, size) = match e {
                    crate::fetch::FetchError::NotAllowed(_) => ("not_allowed", 0),
                    crate::fetch::FetchError::TooLarge(n) => ("too_large", n),
                    crate::fetch::FetchError::Unavailable(_) => ("unavailable", 0),
                };
                (vec![], vec![omitted(name, reason, size)])
            }
        }
    }
}

fn omitted(name: Option<String>, reason: &str, size: u64) -> OmittedMedia {
    OmittedMedia {
        name,
        content_type: "application/octet-stream".into(),
        size,
        reason: reason.into(),
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

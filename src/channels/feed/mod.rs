//! The `feed` channel: a portal's or an app's reports, polled. Open311 servers are asked by
//! creation window (`start_date`/`end_date`), each window overlapping the last by `overlap`, and
//! paged when `page_size` is set; each page is committed with the feed's new position, so a restart
//! resumes after the last stored page and a request seen twice is stored once.

pub mod mapped;
pub mod open311;

use crate::config::FeedConfig;
use crate::fetch::Fetcher;
use crate::health::State;
use crate::intake::Intake;
use crate::pipeline::sha256_hex;
use crate::report::{Media, OmittedMedia};
use crate::store::feeds::{self, FeedCursor};
use crate::store::{Submission, SubmissionBody};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;

/// A page handed to the writer, answering the items new to us once it committed.
type Commit<'a> = std::pin::Pin<Box<dyn Future<Output = Result<usize, Failure>> + Send + 'a>>;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Attempts at one page before the round gives up (the next round starts from the same place).
const PAGE_ATTEMPTS: u32 = 4;
/// Pages asked in one round at most; a longer feed goes on at the next round, from where it was.
const MAX_PAGES: u32 = 200;
/// Open311 servers cap an answer at this many requests (the spec's default).
const OPEN311_CAP: usize = 1000;

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

enum Got {
    /// The bytes, and the answer's validators (kept once the round is stored).
    Body(Vec<u8>, Option<Validators>),
    /// 304: nothing changed since the last answer.
    NotModified,
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
    /// The last complete round's validators (JSON feeds without paging).
    validators: std::sync::Mutex<Option<Validators>>,
    /// The header from `auth_header_file`, read once per round.
    auth: std::sync::Mutex<Option<(String, String)>>,
}

/// The URL an answer was for, its ETag and its Last-Modified.
type Validators = (String, Option<String>, Option<String>);

impl Poller {
    fn new(name: &str, cfg: &FeedConfig, intake: Arc<Intake>) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::fetch::tls_config())
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            // Redirects only within the feed's own origin: the auth header never leaves it, and a
            // redirect cannot reach another host (or a private address) on our behalf.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let origin = attempt.previous().first().map(|u| {
                    (
                        u.scheme().to_string(),
                        u.host_str().map(str::to_string),
                        u.port_or_known_default(),
                    )
                });
                let here = (
                    attempt.url().scheme().to_string(),
                    attempt.url().host_str().map(str::to_string),
                    attempt.url().port_or_known_default(),
                );
                if attempt.previous().len() <= 3 && origin.as_ref() == Some(&here) {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .build()?;
        let rate = NonZeroU32::new(cfg.rate_per_second.max(1)).expect("at least 1");
        Ok(Self {
            name: name.to_string(),
            cfg: cfg.clone(),
            intake,
            client,
            limiter: RateLimiter::direct(Quota::per_second(rate)),
            fetcher: Fetcher::new(&cfg.media_hosts, cfg.max_media_size, cfg.timeout),
            validators: Default::default(),
            auth: Default::default(),
        })
    }

    /// One round; returns the items newly stored.
    async fn poll(&self, cancel: &CancellationToken) -> Result<usize, Failure> {
        let auth = match &self.cfg.auth_header_file {
            None => None,
            Some(file) => {
                let f = file.clone();
                let line = tokio::task::spawn_blocking(move || std::fs::read_to_string(f))
                    .await
                    .map_err(|e| Failure::Later(e.to_string(), Duration::from_secs(5)))?
                    .map_err(|e| Failure::Operator(format!("cannot read auth_header_file: {e}")))?;
                let (k, v) = line.trim().split_once(':').ok_or_else(|| {
                    Failure::Operator("auth_header_file must hold one `Name: value` line".into())
                })?;
                Some((k.trim().to_string(), v.trim().to_string()))
            }
        };
        *self.auth.lock().expect("auth lock") = auth;
        match self.cfg.format {
            crate::config::FeedFormat::Open311 => self.poll_open311(cancel).await,
            crate::config::FeedFormat::Json => self.poll_json(cancel).await,
        }
    }

    async fn cursor(&self) -> Result<Option<FeedCursor>, Failure> {
        let name = self.name.clone();
        let store = self.intake.store().clone();
        tokio::task::spawn_blocking(move || {
            let conn = store.reader()?;
            feeds::cursor(&conn, &name)
        })
        .await
        .map_err(|e| Failure::Later(e.to_string(), Duration::from_secs(5)))?
        .map_err(|e| Failure::Later(e.to_string(), Duration::from_secs(5)))
    }

    /// A JSON feed: from the saved place (a pending next page, else the first page with `since`
    /// set to the newest item seen), page after page, each committed with the new place.
    async fn poll_json(&self, cancel: &CancellationToken) -> Result<usize, Failure> {
        let m = self.cfg.json.clone().ok_or_else(|| {
            Failure::Operator("format = \"json\" without a [json] mapping".into())
        })?;
        let cur = self.cursor().await?;
        let since = cur
            .as_ref()
            .map(|c| c.done_until.clone())
            .unwrap_or_default();
        let mut pending = cur.as_ref().and_then(|c| c.pending_end.clone());
        let mut page = cur.as_ref().map_or(1, |c| c.next_page.max(1));
        let mut newest = since.clone();
        let mut stored = 0;
        // ETags only where one URL is the whole feed: with paging, page 1 unchanged says nothing
        // about the others.
        let conditional = m.next.is_none() && m.cursor.is_none() && m.page_param.is_none();
        let mut previous: Option<Vec<u8>> = None;
        for _ in 0..MAX_PAGES {
            if cancel.is_cancelled() {
                return Ok(stored);
            }
            let url = self.json_url(
                &m,
                &self.since_with_overlap(&since),
                pending.as_deref(),
                page,
            )?;
            let (body, validators) = match self.get(url, page, conditional).await? {
                Got::NotModified => return Ok(stored),
                Got::Body(b, v) => (b, v),
            };
            let fingerprint = sha256_hex(&body).into_bytes();
            let mapping = m.clone();
            let parsed = tokio::task::spawn_blocking(move || mapped::page(&body, &mapping))
                .await
                .map_err(|e| Failure::Later(e.to_string(), Duration::from_secs(5)))?
                .map_err(|e| self.broken(page, &e))?;
            // A server that ignores the cursor or the page number answers the same page again.
            let repeated = previous.as_ref() == Some(&fingerprint);
            previous = Some(fingerprint);
            let empty = parsed.items.is_empty() || repeated;
            if repeated {
                tracing::warn!(channel = %self.name, page, "The feed answered the same page again; it seems to ignore paging. The round ends here.");
            }
            let mut items = Vec::with_capacity(parsed.items.len());
            for raw in parsed.items {
                let (sub, created) = self.json_submission(raw.raw, &m).await;
                if let Some(c) = created
                    && later(&c, &newest, self.intake.tz())
                {
                    newest = c;
                }
                items.push(sub);
            }
            let next = if m.page_param.is_some() {
                (!empty).then(|| (page + 1).to_string())
            } else {
                parsed
                    .next
                    .filter(|_| m.next.is_some() || m.cursor.is_some())
                    // The same cursor or link again, or nothing on this page: the end.
                    .filter(|n| !empty && pending.as_deref() != Some(n.as_str()))
            };
            let last = next.is_none();
            let cursor = FeedCursor {
                channel: self.name.clone(),
                // `since` moves only when the round is complete: a restart mid-way asks again.
                done_until: if last { newest.clone() } else { since.clone() },
                pending_end: if m.page_param.is_some() {
                    None
                } else {
                    next.clone()
                },
                next_page: if last {
                    1
                } else if m.page_param.is_some() {
                    page + 1
                } else {
                    1
                },
                page_size: 0,
            };
            stored += self.commit(items, cursor).await?;
            if last {
                // Only now, with everything stored: a 304 next time means nothing unread.
                if conditional {
                    *self.validators.lock().expect("validators lock") = validators;
                }
                return Ok(stored);
            }
            if m.page_param.is_some() {
                page += 1;
            } else {
                pending = next;
            }
        }
        // Many pages: the rest at the next round, from the saved place.
        Ok(stored)
    }

    /// The `since` to send: the newest creation time seen, less `overlap` (items created earlier
    /// can become visible later: offline apps, moderation); repeats are recognised anyway.
    fn since_with_overlap(&self, since: &str) -> String {
        let tz = self.intake.tz();
        match mapped::time(since, tz) {
            Some(t) => (t - chrono::Duration::from_std(self.cfg.overlap).unwrap_or_default())
                .with_timezone(&tz)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            None => since.to_string(),
        }
    }

    /// The URL of the page to ask: a next-page link (only on the feed's own host), or the feed's
    /// URL with `since`, the cursor or the page number.
    fn json_url(
        &self,
        m: &crate::config::JsonMapping,
        since: &str,
        pending: Option<&str>,
        page: u32,
    ) -> Result<reqwest::Url, Failure> {
        let base = reqwest::Url::parse(&self.cfg.url)
            .map_err(|e| Failure::Operator(format!("url: {e}")))?;
        if let (Some(next), Some(_)) = (pending, &m.next) {
            let url = base.join(next).map_err(|e| {
                Failure::Later(format!("a bad next link: {e}"), self.cfg.poll_interval)
            })?;
            if url.host_str() != base.host_str()
                || url.scheme() != base.scheme()
                || url.port_or_known_default() != base.port_or_known_default()
            {
                return Err(Failure::Later(
                    "the next-page link points to another host; not followed".into(),
                    self.cfg.poll_interval,
                ));
            }
            return Ok(url);
        }
        let mut url = base;
        {
            let mut q = url.query_pairs_mut();
            if let (Some(p), false) = (&m.since_param, since.is_empty()) {
                q.append_pair(p, since);
            }
            if let (Some(p), Some(c)) = (&m.cursor_param, pending) {
                q.append_pair(p, c);
            }
            if let (Some(p), true) = (&m.page_param, page > 1) {
                q.append_pair(p, &page.to_string());
            }
        }
        Ok(url)
    }

    async fn json_submission(
        &self,
        raw: Vec<u8>,
        m: &crate::config::JsonMapping,
    ) -> (Submission, Option<String>) {
        let (body, created) =
            match mapped::item(&raw, m, self.intake.tz(), self.intake.default_category()) {
                Ok(mut it) => {
                    for url in &it.media_urls {
                        let (media, omitted, place) = self.media(url).await;
                        it.draft.media.extend(media);
                        it.draft.omitted_media.extend(omitted);
                        if it.draft.location.is_none() {
                            it.draft.location = place.map(|p| p.location());
                        }
                    }
                    self.intake.classify_text(&mut it.draft, &it.citizen_text);
                    (
                        SubmissionBody::FeedItem {
                            key: it.key,
                            draft: Box::new(it.draft),
                        },
                        Some(it.created),
                    )
                }
                Err(reason) => (SubmissionBody::Quarantine { reason }, None),
            };
        (self.wrap(raw, body), created)
    }

    /// Commits a page's items with the feed's new position; returns the items new to us.
    async fn commit(&self, items: Vec<Submission>, cursor: FeedCursor) -> Result<usize, Failure> {
        let receipts = self
            .intake
            .store()
            .submit_page(items, cursor)
            .await
            .map_err(|e| Failure::Later(e.to_string(), Duration::from_secs(5)))?;
        Ok(receipts.iter().filter(|r| !r.redelivered).count())
    }

    /// A page that is not what the format says: nothing stored, nothing moved, asked again.
    fn broken(&self, page: u32, e: &str) -> Failure {
        Failure::Later(
            format!("page {page}: {e}; the page is asked again"),
            self.cfg.poll_interval.min(Duration::from_secs(30)),
        )
    }

    fn wrap(&self, raw: Vec<u8>, body: SubmissionBody) -> Submission {
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

    /// One round of an Open311 feed: every page of the current window.
    async fn poll_open311(&self, cancel: &CancellationToken) -> Result<usize, Failure> {
        let parse = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .ok()
        };
        let now = chrono::Utc::now();
        let overlap = chrono::Duration::from_std(self.cfg.overlap).unwrap_or_default();
        let cur = self.cursor().await?;
        let backlog = now - chrono::Duration::from_std(self.cfg.backlog).unwrap_or_default();
        let (start, end, mut page) = match &cur {
            None => (backlog, now, 1),
            Some(c) => {
                let done = parse(&c.done_until).unwrap_or(backlog);
                match c.pending_end.as_deref().and_then(parse) {
                    // Resumed in the page size it was counted in; if that changed, from page 1.
                    Some(pending) if c.page_size == self.cfg.page_size => {
                        (done - overlap, pending, c.next_page.max(1))
                    }
                    Some(pending) => (done - overlap, pending, 1),
                    None => (done - overlap, now, 1),
                }
            }
        };
        let mut stored = 0;
        let mut previous: Option<String> = None;
        // Page N+1 is fetched and parsed while page N commits; it is handed to the writer only
        // after N committed, so a failed page never has a later position stored over it.
        let mut committing: Option<Commit<'_>> = None;
        for _ in 0..MAX_PAGES {
            if cancel.is_cancelled() {
                break;
            }
            let next = self.open311_page(start, end, page, overlap, &mut previous);
            let (done, next) = match committing.take() {
                Some(c) => {
                    let (done, next) = tokio::join!(c, next);
                    (Some(done), next)
                }
                None => (None, next.await),
            };
            if let Some(done) = done {
                stored += done?;
            }
            let (items, cursor, last) = next?;
            let commit = Box::pin(self.commit(items, cursor));
            if last {
                return Ok(stored + commit.await?);
            }
            committing = Some(commit);
            page += 1;
        }
        // Cancelled, or many pages: the rest at the next round, from the saved place.
        if let Some(c) = committing {
            stored += c.await?;
        }
        Ok(stored)
    }

    /// One Open311 page, fetched and made into submissions, with the position after it and
    /// whether it ends the window.
    async fn open311_page(
        &self,
        start: chrono::DateTime<chrono::Utc>,
        end: chrono::DateTime<chrono::Utc>,
        page: u32,
        overlap: chrono::Duration,
        previous: &mut Option<String>,
    ) -> Result<(Vec<Submission>, FeedCursor, bool), Failure> {
        let tz = self.intake.tz();
        let stamp = |t: chrono::DateTime<chrono::Utc>| {
            t.with_timezone(&tz)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
        };
        let body = self.page(&stamp(start), &stamp(end), page).await?;
        let fingerprint = sha256_hex(&body);
        let raws = tokio::task::spawn_blocking(move || open311::page(&body))
            .await
            .map_err(|e| Failure::Later(e.to_string(), Duration::from_secs(5)))?
            .map_err(|e| self.broken(page, &e))?;
        // Paging is an extension: a server that ignores it answers the same page again.
        let repeated = previous.as_deref() == Some(fingerprint.as_str());
        *previous = Some(fingerprint);
        if repeated {
            tracing::warn!(channel = %self.name, page, "The Open311 server answered the same page again; it seems to ignore page/page_size. Set page_size = 0 and a shorter poll_interval.");
        }
        if self.cfg.page_size == 0 && raws.len() >= OPEN311_CAP {
            tracing::warn!(channel = %self.name, items = raws.len(), "An Open311 answer at the server's cap: the window may have been cut short. Use page_size (if the server pages) or a shorter poll_interval.");
        }
        // The end is an empty page (a short one may only be the server's own limit).
        let last = self.cfg.page_size == 0 || raws.is_empty() || repeated;
        let raws = if repeated { Vec::new() } else { raws };
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
            page_size: self.cfg.page_size,
        };
        Ok((items, cursor, last))
    }

    /// One Open311 page's bytes.
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
        match self.get(url, page, false).await? {
            Got::Body(b, _) => Ok(b),
            Got::NotModified => {
                Err(self.broken(page, "a 304 to a request that was not conditional"))
            }
        }
    }

    /// A response's bytes, with retries for what may pass (429/503 after Retry-After, 5xx,
    /// timeouts), capped at `max_response_size` while it streams. With `conditional`, the last
    /// answer's ETag and date are sent back, and 304 costs nothing.
    async fn get(&self, url: reqwest::Url, page: u32, conditional: bool) -> Result<Got, Failure> {
        let mut last_error = String::new();
        for attempt in 1..=PAGE_ATTEMPTS {
            self.limiter.until_ready().await;
            let mut req = self.client.get(url.clone());
            if conditional {
                let v = self.validators.lock().expect("validators lock").clone();
                if let Some((for_url, etag, modified)) = v
                    && for_url == url.as_str()
                {
                    if let Some(e) = etag {
                        req = req.header(reqwest::header::IF_NONE_MATCH, e);
                    }
                    if let Some(m) = modified {
                        req = req.header(reqwest::header::IF_MODIFIED_SINCE, m);
                    }
                }
            }
            if let Some((k, v)) = self.auth.lock().expect("auth lock").clone() {
                req = req.header(k, v);
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
                    if attempt < PAGE_ATTEMPTS {
                        tokio::time::sleep(backoff).await;
                    }
                    continue;
                }
            };
            let status = resp.status().as_u16();
            match status {
                200 => {}
                304 if conditional => return Ok(Got::NotModified),
                401 | 403 => {
                    return Err(Failure::Operator(format!("HTTP {status}")));
                }
                429 | 503 => {
                    let wait = crate::fetch::retry_after(resp.headers()).unwrap_or(backoff);
                    // A long wait ends the round; a short one is waited here.
                    if wait > Duration::from_secs(30) {
                        return Err(Failure::Later(format!("HTTP {status}, Retry-After"), wait));
                    }
                    last_error = format!("HTTP {status}");
                    if attempt < PAGE_ATTEMPTS {
                        tokio::time::sleep(wait).await;
                    }
                    continue;
                }
                s if s >= 500 => {
                    last_error = format!("HTTP {status}");
                    if attempt < PAGE_ATTEMPTS {
                        tokio::time::sleep(backoff).await;
                    }
                    continue;
                }
                other => {
                    return Err(Failure::Later(
                        format!("HTTP {other} for page {page}"),
                        Duration::from_secs(300),
                    ));
                }
            }
            let header = |h: reqwest::header::HeaderName| {
                resp.headers()
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let validators = (
                url.to_string(),
                header(reqwest::header::ETAG),
                header(reqwest::header::LAST_MODIFIED),
            );
            match self.body(resp).await {
                Ok(b) => return Ok(Got::Body(b, Some(validators))),
                Err(e) => {
                    last_error = e;
                    if attempt < PAGE_ATTEMPTS {
                        tokio::time::sleep(backoff).await;
                    }
                }
            }
        }
        Err(Failure::Later(
            last_error,
            self.cfg.poll_interval.max(Duration::from_secs(60)),
        ))
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
                    let (media, omitted, place) = self.media(url).await;
                    r.draft.media.extend(media);
                    r.draft.omitted_media.extend(omitted);
                    if r.draft.location.is_none() {
                        r.draft.location = place.map(|p| p.location());
                    }
                }
                self.intake.classify_text(&mut r.draft, &r.citizen_text);
                SubmissionBody::FeedItem {
                    key: r.key,
                    draft: Box::new(r.draft),
                }
            }
            Err(reason) => SubmissionBody::Quarantine { reason },
        };
        self.wrap(raw, body)
    }

    /// A photo by URL: kept, or listed as omitted; with its EXIF position when it has one.
    async fn media(
        &self,
        url: &str,
    ) -> (
        Vec<Media>,
        Vec<OmittedMedia>,
        Option<crate::pipeline::place::PhotoPlace>,
    ) {
        let name = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.path_segments()?.next_back().map(str::to_string))
            .filter(|s| !s.is_empty());
        match self.fetcher.get(url).await {
            Ok(got) => {
                match crate::media::keep(
                    self.intake.media().clone(),
                    got.bytes,
                    got.content_type,
                    name.clone(),
                    self.intake.tz(),
                )
                .await
                {
                    Ok((m, place)) => (vec![m], vec![], place),
                    Err(_) => (vec![], vec![omitted(name, "unavailable", 0)], None),
                }
            }
            Err(e) => {
                tracing::warn!(channel = %self.name, error = %e, "Feed photo not kept.");
                let (reason, size) = match e {
                    crate::fetch::FetchError::NotAllowed(_) => ("not_allowed", 0),
                    crate::fetch::FetchError::TooLarge(n) => ("too_large", n),
                    crate::fetch::FetchError::Unavailable(_) => ("unavailable", 0),
                };
                (vec![], vec![omitted(name, reason, size)], None)
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

/// One stored item read again with the channel's settings (for `quarantine retry`): its draft,
/// the citizen's words for the category rules, and its key.
pub fn read_item(
    raw: &[u8],
    cfg: &FeedConfig,
    tz: chrono_tz::Tz,
    default_category: &str,
) -> Result<(crate::pipeline::Draft, String, String), String> {
    match (cfg.format, &cfg.json) {
        (crate::config::FeedFormat::Json, Some(m)) => {
            mapped::item(raw, m, tz, default_category).map(|i| (i.draft, i.citizen_text, i.key))
        }
        (crate::config::FeedFormat::Json, None) => Err("no [json] mapping".into()),
        (crate::config::FeedFormat::Open311, _) => {
            open311::request(raw, &cfg.service_codes, tz, default_category)
                .map(|r| (r.draft, r.citizen_text, r.key))
        }
    }
}

/// The feed's own category (mapped to ours) wins; without one, the default until the rules speak.
fn category(mapped: Option<String>, default_category: &str) -> crate::report::Category {
    use crate::report::{Category, CategorySource};
    match mapped {
        Some(code) => Category {
            code,
            source: CategorySource::Channel,
            score: 1.0,
        },
        None => Category {
            code: default_category.to_string(),
            source: CategorySource::Default,
            score: 0.0,
        },
    }
}

/// A feed item's place: its coordinates when plausible (with the address), and the text with the
/// address added when there are no coordinates to carry it.
fn place(
    lat: Option<f64>,
    lon: Option<f64>,
    address: Option<String>,
    description: &str,
) -> (Option<crate::report::Location>, String) {
    let location = match (lat, lon) {
        (Some(lat), Some(lon))
            if (-90.0..=90.0).contains(&lat)
                && (-180.0..=180.0).contains(&lon)
                && (lat, lon) != (0.0, 0.0) =>
        {
            Some(crate::report::Location {
                lat,
                lon,
                source: crate::report::LocationSource::Feed,
                accuracy_m: None,
                address: address.clone(),
                ward: None,
                taken_at: None,
                outside_city: false,
            })
        }
        _ => None,
    };
    let mut text = description.to_string();
    if let Some(a) = address.filter(|_| location.is_none()) {
        text.push_str(&format!("\nĐịa chỉ: {a}"));
    }
    (location, text)
}

/// Whether created time `a` is later than `b` (times when both read as times, else as text).
fn later(a: &str, b: &str, tz: chrono_tz::Tz) -> bool {
    if b.is_empty() {
        return true;
    }
    match (mapped::time(a, tz), mapped::time(b, tz)) {
        (Some(x), Some(y)) => x > y,
        _ => a > b,
    }
}

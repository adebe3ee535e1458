//! The IMAP loop: connect, select, drain from the saved position, then IDLE (or poll), forever.

use super::connect::{self, ConnectError, ImapSession, Login};
use super::unfetchable;
use crate::channels::Envelope;
use crate::config::Credential;
use crate::config::secrets::SecretRef;
use crate::config::units::human_size;
use crate::config::{Backlog, ChannelKind, ImapAfter, ImapConfig};
use crate::health::State;
use crate::intake::{Intake, ParseRules};
use crate::store::{Cursor, Outcome, queries};
use anyhow::Context;
use futures::TryStreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// RFC 2177: clients should re-issue IDLE at least every 29 minutes.
const IDLE_MAX: Duration = Duration::from_secs(25 * 60);
/// The keyword `after_ingest = "flag"` sets.
const INGESTED: &str = "$PhananhIngested";
/// How often a refused XOAUTH2 token file is looked at for a fresh token.
const TOKEN_RECHECK: Duration = Duration::from_secs(2);
/// Of a message too large to download, this much (its header) is kept in quarantine.
const HEADER_PEEK: &str = "BODY.PEEK[HEADER]";

pub async fn run(
    name: &str,
    cfg: &ImapConfig,
    intake: Arc<Intake>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let credential = cfg.credential();
    let (Credential::Password(secret) | Credential::OAuth2(secret)) = &credential;
    let secret = secret.resolve().map_err(|e| anyhow::anyhow!(e))?;
    let login = match &credential {
        Credential::Password(_) => Login::Password(secret),
        Credential::OAuth2(_) => Login::OAuth2Token(secret),
    };
    let mut session = match connect::open(cfg, &login).await {
        Ok(s) => s,
        Err(ConnectError::Rejected(msg)) if !cancel.is_cancelled() => {
            intake.health().set(
                name,
                State::NeedsOperator,
                Some(format!("login refused: {}", msg.trim())),
            );
            return refused(name, &credential, &login, msg.trim(), &cancel).await;
        }
        Err(ConnectError::Rejected(_)) => return Ok(()),
        Err(ConnectError::Other(e)) => return Err(e),
    };
    let caps = session.capabilities().await.context("CAPABILITY failed")?;
    let can_idle = cfg.idle && caps.has_str("IDLE");
    let can_move = caps.has_str("MOVE");
    if let ImapAfter::Move(folder) = &cfg.after_ingest {
        // An existing folder answers NO: fine.
        let _ = session.create(folder).await;
    }
    let mailbox = session
        .select(&cfg.mailbox)
        .await
        .with_context(|| format!("cannot select {}", cfg.mailbox))?;
    let uidvalidity = mailbox.uid_validity.unwrap_or(0);
    let mut last_uid = match start_position(name, cfg, &intake, uidvalidity)? {
        Some(last) => last,
        None if cfg.backlog == Backlog::Skip => {
            // Saved at once: a restart before the first new message must not take the backlog.
            let last = mailbox.uid_next.unwrap_or(1).saturating_sub(1);
            tracing::info!(channel = %name, mailbox = %cfg.mailbox, messages = mailbox.exists, "First connection with backlog = \"skip\": mail already in the mailbox is left alone.");
            intake
                .store()
                .set_cursor(Cursor {
                    channel: name.to_string(),
                    mailbox: cfg.mailbox.clone(),
                    uidvalidity,
                    last_uid: last,
                })
                .await?;
            last
        }
        None => 0,
    };
    tracing::info!(channel = %name, mailbox = %cfg.mailbox, idle = can_idle, "IMAP channel started.");
    if !cancel.is_cancelled() {
        intake.health().set(name, State::Running, None);
    }

    let rules = ParseRules {
        email: cfg.limits(&intake.email_defaults()),
        acknowledge: cfg.ack.is_some(),
        facebook: None,
        feed: None,
    };
    let job = Drain {
        name,
        cfg,
        intake: &intake,
        rules: &rules,
        uidvalidity,
        can_move,
    };
    loop {
        last_uid = job.drain(&mut session, last_uid, &cancel).await?;
        if cancel.is_cancelled() {
            let _ = session.logout().await;
            tracing::info!(channel = %name, "IMAP channel stopped.");
            return Ok(());
        }
        session = if can_idle {
            idle(session, cfg, &cancel).await?
        } else {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(cfg.poll_interval) => {}
            }
            session.noop().await.context("NOOP failed")?;
            session
        };
    }
}

/// Retrying a refused password only locks the account: wait for the operator's reload (which
/// restarts the channel). A refused XOAUTH2 token has usually expired: wait for the operator's
/// tooling to write a fresh one to the token file, then try it.
async fn refused(
    name: &str,
    credential: &Credential,
    login: &Login,
    server_says: &str,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let (Credential::OAuth2(SecretRef::File(path)), Login::OAuth2Token(old)) = (credential, login)
    else {
        tracing::error!(channel = %name, server_says, "IMAP login refused; fix the credentials and reload (systemctl reload phananh).");
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(3600)) => anyhow::bail!("login refused"),
        }
    };
    tracing::error!(channel = %name, server_says, token_file = %path.display(), "IMAP XOAUTH2 token refused; waiting for a fresh token in the token file.");
    let token = SecretRef::File(path.clone());
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(TOKEN_RECHECK) => {}
        }
        if token.resolve().is_ok_and(|t| t != *old) {
            anyhow::bail!(
                "the XOAUTH2 token was refused; a new one is in the token file, reconnecting"
            );
        }
    }
}

/// The saved position, or None on a first connection. A new UIDVALIDITY starts over from 0
/// (intake recognises what it already has by Message-ID).
fn start_position(
    name: &str,
    cfg: &ImapConfig,
    intake: &Intake,
    uidvalidity: u32,
) -> anyhow::Result<Option<u32>> {
    let conn = intake.store().reader()?;
    Ok(match queries::imap_cursor(&conn, name, &cfg.mailbox)? {
        Some((v, last)) if v == uidvalidity => Some(last),
        Some((v, _)) => {
            tracing::warn!(channel = %name, mailbox = %cfg.mailbox, old = v, new = uidvalidity, "UIDVALIDITY changed: rescanning the mailbox; messages already stored are recognised and not stored twice.");
            Some(0)
        }
        None => None,
    })
}

/// Waits in IDLE until the server reports something, the catch-up interval passes, or shutdown.
async fn idle(
    session: ImapSession,
    cfg: &ImapConfig,
    cancel: &CancellationToken,
) -> anyhow::Result<ImapSession> {
    let mut handle = session.idle();
    handle.init().await.context("IDLE failed")?;
    let limit = cfg.poll_interval.min(IDLE_MAX);
    {
        let (wait, _stop) = handle.wait_with_timeout(limit);
        tokio::select! {
            _ = cancel.cancelled() => {}
            // Dovecot's keepalives reset the library's own timeout, so bound the wait here too.
            _ = tokio::time::sleep(limit) => {}
            r = wait => { r.context("IDLE failed")?; }
        }
    }
    handle.done().await.context("ending IDLE failed")
}

struct Drain<'a> {
    name: &'a str,
    cfg: &'a ImapConfig,
    intake: &'a Arc<Intake>,
    rules: &'a ParseRules,
    uidvalidity: u32,
    can_move: bool,
}

impl Drain<'_> {
    /// Takes every message after `last_uid`, batch by batch; returns the new position. A message
    /// that cannot be stored stops the position before it, to be retried next round.
    async fn drain(
        &self,
        session: &mut ImapSession,
        mut last_uid: u32,
        cancel: &CancellationToken,
    ) -> anyhow::Result<u32> {
        let found = bounded(self.cfg.timeout, "UID SEARCH", async {
            session
                .uid_search(format!("UID {}:*", last_uid + 1))
                .await
                .context("UID SEARCH failed")
        })
        .await?;
        // "N:*" also answers the highest UID when it is below N.
        let mut uids: Vec<u32> = found.into_iter().filter(|u| *u > last_uid).collect();
        uids.sort_unstable();
        let mut total = 0;
        let key = unfetchable::key(self.name, &self.cfg.mailbox, self.uidvalidity);
        for chunk in unfetchable::chunks(&uids, self.cfg.batch, unfetchable::suspect(&key)) {
            let chunk = &chunk[..];
            if cancel.is_cancelled() {
                break;
            }
            // A server that stops answering must not hold the channel forever: past the bound the
            // connection is dropped and the channel reconnects (what was committed stays so).
            let limit = self.cfg.timeout * 4;
            let (stored, complete) =
                bounded(limit, "fetching a batch", self.batch(session, chunk)).await?;
            total += stored.len();
            // Committed: only now do the messages leave the mailbox. The position is saved after
            // the move, so a crash between commit and move fetches them again (intake recognises
            // them) and moves them then, instead of leaving them behind the position forever.
            bounded(limit, "moving a batch", self.after_ingest(session, &stored)).await?;
            let mut prefix = last_uid;
            for uid in chunk {
                // A message the server cannot send is quarantined and passed over, left in place.
                if stored.contains(uid) || unfetchable::is_skipped(&key, *uid) {
                    prefix = *uid;
                } else {
                    break;
                }
            }
            if prefix > last_uid {
                last_uid = prefix;
                self.intake
                    .store()
                    .set_cursor(Cursor {
                        channel: self.name.to_string(),
                        mailbox: self.cfg.mailbox.clone(),
                        uidvalidity: self.uidvalidity,
                        last_uid,
                    })
                    .await?;
            }
            if !complete {
                tracing::warn!(channel = %self.name, "Some messages could not be stored; they stay on the server and are retried.");
                break;
            }
        }
        if total > 0 {
            tracing::info!(channel = %self.name, messages = total, "Ingested messages.");
        }
        Ok(last_uid)
    }

    /// Fetches and submits one batch; returns the UIDs stored and whether all were.
    async fn batch(
        &self,
        session: &mut ImapSession,
        uids: &[u32],
    ) -> anyhow::Result<(Vec<u32>, bool)> {
        let key = unfetchable::key(self.name, &self.cfg.mailbox, self.uidvalidity);
        let uids: Vec<u32> = uids
            .iter()
            .copied()
            .filter(|u| !unfetchable::is_skipped(&key, *u))
            .collect();
        if uids.is_empty() {
            return Ok((Vec::new(), true));
        }
        let uids = &uids[..];
        let set = uid_set(uids);
        let mut sizes: Vec<(u32, u32)> = Vec::new();
        let sized = self.sizes(session, &set, &mut sizes).await;
        let got: Vec<u32> = sizes.iter().map(|(u, _)| *u).collect();
        if let Some(uid) = first_missing(uids, &got) {
            // The server stopped (or skipped a message) while sizing: it cannot read that one.
            let error = sized
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("the server sent no size for it"));
            let mut items = Vec::new();
            self.suspect(uid, 0, &error, &mut items);
            for (uid, raw, reason) in items {
                self.submit_note(uid, raw, reason.unwrap_or_default(), &key)
                    .await;
            }
            return Err(error);
        }
        let limit = self.rules.email.max_message_size;
        let (big, small): (Vec<_>, Vec<_>) = sizes
            .into_iter()
            .partition(|(_, size)| u64::from(*size) > limit);

        let mut items: Vec<(u32, Vec<u8>, Option<String>)> = Vec::new();
        let mut fetch_error = None;
        if !small.is_empty() {
            let wanted: Vec<u32> = small.iter().map(|(u, _)| *u).collect();
            fetch_error = self
                .fetch(session, &wanted, "BODY.PEEK[]", &mut items)
                .await
                .err();
            if let Some(e) = &fetch_error {
                let got: Vec<u32> = items.iter().map(|(u, ..)| *u).collect();
                if let Some(uid) = first_missing(&wanted, &got) {
                    let size = small.iter().find(|(u, _)| *u == uid).map_or(0, |(_, s)| *s);
                    self.suspect(uid, size, e, &mut items);
                }
            }
        }
        if !big.is_empty() && fetch_error.is_none() {
            let wanted: Vec<u32> = big.iter().map(|(u, _)| *u).collect();
            let mut headers = Vec::new();
            fetch_error = self
                .fetch(session, &wanted, HEADER_PEEK, &mut headers)
                .await
                .err();
            let got: Vec<u32> = headers.iter().map(|(u, ..)| *u).collect();
            for (uid, header, _) in headers {
                let size = big.iter().find(|(u, _)| *u == uid).map_or(0, |(_, s)| *s);
                let reason = format!(
                    "message is {}, over max_message_size {}: not downloaded; only its header is kept here, the whole message stays on the IMAP server (handled by after_ingest like any other)",
                    human_size(u64::from(size)),
                    human_size(limit)
                );
                items.push((uid, header, Some(reason)));
            }
            if let Some(e) = &fetch_error
                && let Some(uid) = first_missing(&wanted, &got)
            {
                let size = big.iter().find(|(u, _)| *u == uid).map_or(0, |(_, s)| *s);
                self.suspect(uid, size, e, &mut items);
            }
        }
        // A suspect that came through after all is cleared.
        for (uid, ..) in &items {
            unfetchable::cleared(&key, *uid);
        }

        let results =
            futures::future::join_all(items.into_iter().map(|(uid, raw, too_big)| async move {
                let env = Envelope {
                    channel: self.name.to_string(),
                    kind: ChannelKind::Imap,
                    raw,
                    source_ref: Some(format!("{}/{}/{uid}", self.cfg.mailbox, self.uidvalidity)),
                };
                let r = match too_big {
                    Some(reason) => self.intake.quarantine(env, reason).await,
                    None => self.intake.submit(env, self.rules).await,
                };
                (uid, r)
            }))
            .await;
        let mut stored = Vec::new();
        for (uid, r) in results {
            match r {
                Ok(receipt) => {
                    if let Outcome::Quarantined { reason } = &receipt.outcome
                        && !receipt.redelivered
                    {
                        tracing::warn!(channel = %self.name, uid, inbox_id = receipt.inbox_id, reason = %reason, "Message quarantined; `phananh quarantine show` has it.");
                    }
                    if reason_is_unfetchable(&receipt.outcome) {
                        // Recorded: pass over it from now on; it stays on the server, unmoved.
                        unfetchable::skip(&key, uid);
                    } else {
                        stored.push(uid);
                    }
                }
                Err(e) => {
                    tracing::warn!(channel = %self.name, uid, error = %e, "Cannot store message.")
                }
            }
        }
        stored.sort_unstable();
        // What arrived before a failed FETCH is committed; the connection is gone, so it is moved
        // on the next one (intake recognises it).
        if let Some(e) = fetch_error {
            return Err(e);
        }
        let complete = stored.len() == uids.len();
        Ok((stored, complete))
    }

    /// `BODY.PEEK[]` or `BODY.PEEK[HEADER]` for `uids`, keeping every message that arrived even
    /// when the FETCH fails part way (the server gives up on one message and, like Dovecot, may
    /// hang up).
    async fn fetch(
        &self,
        session: &mut ImapSession,
        uids: &[u32],
        part: &str,
        items: &mut Vec<(u32, Vec<u8>, Option<String>)>,
    ) -> anyhow::Result<()> {
        let header = part == HEADER_PEEK;
        let mut stream = session
            .uid_fetch(uid_set(uids), format!("(UID {part})"))
            .await
            .context("UID FETCH failed")?;
        while let Some(f) = stream.try_next().await.context("UID FETCH failed")? {
            let bytes = if header { f.header() } else { f.body() };
            if let (Some(uid), Some(bytes)) = (f.uid, bytes) {
                items.push((uid, bytes.to_vec(), None));
            }
        }
        Ok(())
    }

    /// RFC822.SIZE for `set`, keeping what arrived when the FETCH fails part way.
    async fn sizes(
        &self,
        session: &mut ImapSession,
        set: &str,
        sizes: &mut Vec<(u32, u32)>,
    ) -> anyhow::Result<()> {
        let mut stream = session
            .uid_fetch(set, "(UID RFC822.SIZE)")
            .await
            .context("UID FETCH failed")?;
        while let Some(f) = stream.try_next().await.context("UID FETCH failed")? {
            if let Some(uid) = f.uid {
                sizes.push((uid, f.size.unwrap_or(0)));
            }
        }
        Ok(())
    }

    /// Quarantines the note for an unfetchable message; once recorded, it is passed over.
    async fn submit_note(&self, uid: u32, raw: Vec<u8>, reason: String, key: &str) {
        let env = Envelope {
            channel: self.name.to_string(),
            kind: ChannelKind::Imap,
            raw,
            source_ref: Some(format!("{}/{}/{uid}", self.cfg.mailbox, self.uidvalidity)),
        };
        match self.intake.quarantine(env, reason).await {
            Ok(receipt) => {
                tracing::warn!(channel = %self.name, uid, inbox_id = receipt.inbox_id, "The server cannot send this message; quarantined a note and moving past it.");
                unfetchable::skip(key, uid);
            }
            Err(e) => {
                tracing::warn!(channel = %self.name, uid, error = %e, "Cannot store message.")
            }
        }
    }

    /// After a failed FETCH: the first UID that did not arrive takes a strike; at the last strike
    /// it is quarantined as a note (there are no bytes to keep) so the mailbox can move on.
    fn suspect(
        &self,
        uid: u32,
        size: u32,
        error: &anyhow::Error,
        items: &mut Vec<(u32, Vec<u8>, Option<String>)>,
    ) {
        let key = unfetchable::key(self.name, &self.cfg.mailbox, self.uidvalidity);
        let strikes = unfetchable::strike(&key, uid);
        tracing::warn!(channel = %self.name, uid, strikes, error = format!("{error:#}"), "FETCH failed at this message.");
        if strikes < unfetchable::STRIKES {
            return;
        }
        let size = if size > 0 {
            format!(", {}", human_size(u64::from(size)))
        } else {
            String::new()
        };
        let reason = format!(
            "{UNFETCHABLE} (UID {uid}{size}) after {strikes} tries: {error:#}. It stays in the mailbox; the channel moved past it. Once the server can read it again, move it back into the mailbox as a new message to take it in",
        );
        items.push((
            uid,
            unfetchable::note(&self.cfg.mailbox, self.uidvalidity, uid),
            Some(reason),
        ));
    }

    /// Committed: only now do the messages leave the mailbox (or get flagged).
    async fn after_ingest(&self, session: &mut ImapSession, stored: &[u32]) -> anyhow::Result<()> {
        if stored.is_empty() {
            return Ok(());
        }
        let set = uid_set(stored);
        match &self.cfg.after_ingest {
            ImapAfter::Move(folder) if self.can_move => {
                session
                    .uid_mv(&set, folder)
                    .await
                    .context("UID MOVE failed")?;
            }
            ImapAfter::Move(folder) => {
                session
                    .uid_copy(&set, folder)
                    .await
                    .context("UID COPY failed")?;
                session
                    .uid_store(&set, "+FLAGS.SILENT (\\Deleted)")
                    .await
                    .context("UID STORE failed")?
                    .try_collect::<Vec<_>>()
                    .await?;
                session
                    .uid_expunge(&set)
                    .await
                    .context("UID EXPUNGE failed")?
                    .try_collect::<Vec<_>>()
                    .await?;
            }
            ImapAfter::Flag => {
                session
                    .uid_store(&set, format!("+FLAGS.SILENT (\\Seen {INGESTED})"))
                    .await
                    .context("UID STORE failed")?
                    .try_collect::<Vec<_>>()
                    .await?;
            }
        }
        Ok(())
    }
}

/// Starts the reason of a quarantined note for a message the server could not send.
const UNFETCHABLE: &str = "the IMAP server could not fetch this message";

/// The lowest UID of `wanted` that is not in `got`.
fn first_missing(wanted: &[u32], got: &[u32]) -> Option<u32> {
    wanted.iter().copied().filter(|u| !got.contains(u)).min()
}

fn reason_is_unfetchable(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Quarantined { reason } if reason.starts_with(UNFETCHABLE))
}

/// Runs `fut` for at most `limit`.
async fn bounded<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| anyhow::anyhow!("{what} took longer than {limit:?}; reconnecting"))?
}

/// "1,2,3,7" from UIDs (sorted by the caller or not; IMAP accepts any order).
fn uid_set(uids: &[u32]) -> String {
    uids.iter()
        .map(|u| u.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

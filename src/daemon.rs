//! `phananh run`: wiring and lifecycle. Start the store, the forwarders, the channels and the
//! HTTP server; reload channels on SIGHUP; on SIGTERM/SIGINT stop intake first, let in-flight
//! commits and the current deliveries finish, close the store, exit 0.

use crate::channels;
use crate::config::{self, ChannelConfig, Config};
use crate::forward::Forwarder;
use crate::intake::Intake;
use crate::store::{Store, StoreSettings};
use anyhow::Context;
use sd_notify::NotifyState;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for channels and forwarders before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

struct Running {
    config: ChannelConfig,
    cancel: CancellationToken,
}

pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::store::create_private_dir(&config.daemon.state_dir).with_context(|| {
        format!(
            "cannot create state directory {}",
            config.daemon.state_dir.display()
        )
    })?;
    let store =
        Store::open(StoreSettings::from_config(&config)).context("cannot open the store")?;
    let intake = Arc::new(Intake::new(&config, store.clone()));

    let listener = tokio::net::TcpListener::bind(config.daemon.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.daemon.listen))?;

    let mut forward_cancel = CancellationToken::new();
    let mut forwarders = TaskTracker::new();
    start_forwarders(
        Forwarder::all(&config, &store, intake.health()).context("cannot start the forwarders")?,
        &forwarders,
        &forward_cancel,
    );

    let http_cancel = CancellationToken::new();
    let http = tokio::spawn(crate::http::serve(
        listener,
        intake.health().clone(),
        intake.webhooks().clone(),
        http_cancel.clone(),
    ));

    let channels_tracker = TaskTracker::new();
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    for ch in config.channels.values() {
        start_channel(
            &mut running,
            &channels_tracker,
            ch.clone(),
            &intake,
            &config,
        );
    }
    let mut current = config;
    tracing::info!(
        channels = running.len(),
        listen = %current.daemon.listen,
        state_dir = %current.daemon.state_dir.display(),
        "phananh is running."
    );
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("Running {} channels.", running.len())),
    ]);

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    // With WatchdogSec= in the unit, systemd restarts us if this loop stops turning.
    let watchdog_every = sd_notify::watchdog_enabled()
        .map(|d| d / 2)
        .unwrap_or(Duration::from_secs(3600));
    let mut watchdog = tokio::time::interval(watchdog_every);
    loop {
        tokio::select! {
            _ = watchdog.tick() => notify(&[NotifyState::Watchdog]),
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                notify(&[NotifyState::Reloading, NotifyState::monotonic_usec_now().unwrap_or(NotifyState::Status("Reloading."))]);
                let before = current.daemon.clone();
                current = reload(current, config_path, &mut running, &channels_tracker, &intake).await;
                if current.daemon.sinks != before.sinks || current.daemon.forward != before.forward {
                    match Forwarder::all(&current, &store, intake.health()) {
                        Ok(next) => {
                            // New events are routed to the new sinks first; then the old workers
                            // finish their current delivery and the new ones take over.
                            store.set_sink_routes(StoreSettings::from_config(&current).sinks);
                            forward_cancel.cancel();
                            forwarders.close();
                            if tokio::time::timeout(DRAIN_TIMEOUT, forwarders.wait()).await.is_err() {
                                tracing::warn!("Forwarders did not stop in time for the reload.");
                            }
                            for gone in before.sinks.keys().filter(|k| !current.daemon.sinks.contains_key(*k)) {
                                intake.health().remove_sink(gone);
                                tracing::info!(sink = %gone, "Sink removed; its undelivered events stay in the outbox.");
                            }
                            forward_cancel = CancellationToken::new();
                            forwarders = TaskTracker::new();
                            start_forwarders(next, &forwarders, &forward_cancel);
                            tracing::info!(sinks = current.daemon.sinks.len(), "Sinks reloaded.");
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "Sinks not reloaded; the running sinks stay.");
                            current.daemon.sinks = before.sinks;
                            current.daemon.forward = before.forward;
                        }
                    }
                }
                notify(&[NotifyState::Ready, NotifyState::Status(&format!("Running {} channels.", running.len()))]);
            }
        }
    }

    tracing::info!("Stopping: no new intake; finishing in-flight work.");
    notify(&[NotifyState::Stopping, NotifyState::Status("Stopping.")]);
    for r in running.values() {
        r.cancel.cancel();
    }
    channels_tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, channels_tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "Channels did not stop in time; their uncommitted items stay upstream and are taken next start."
        );
    }
    forward_cancel.cancel();
    forwarders.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, forwarders.wait())
        .await
        .is_err()
    {
        tracing::warn!("Forwarders did not stop in time; undelivered events stay in the outbox.");
    }
    http_cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    drop(intake);
    // The writer stops once every handle is gone; a task that outlived its drain timeout may still
    // hold one, and the process exit must not wait for it.
    if tokio::time::timeout(Duration::from_secs(15), store.close())
        .await
        .is_err()
    {
        tracing::warn!(
            "The store did not close in time; SQLite's journal keeps what was committed."
        );
    }
    tracing::info!("Stopped.");
    Ok(())
}

fn start_channel(
    running: &mut BTreeMap<String, Running>,
    tracker: &TaskTracker,
    ch: ChannelConfig,
    intake: &Arc<Intake>,
    config: &Config,
) {
    let cancel = CancellationToken::new();
    tracker.spawn(channels::supervise(
        ch.clone(),
        intake.clone(),
        cancel.clone(),
    ));
    let via = match (&ch.settings, ch.ack()) {
        (_, Some(ack)) => Some(crate::ack::Via::Mail(ack.clone())),
        (crate::config::ChannelSettings::Facebook(f), None) if f.reply => {
            Some(crate::ack::Via::Messenger(f.clone()))
        }
        _ => None,
    };
    if let Some(via) = via {
        tracker.spawn(crate::ack::run(
            ch.name.clone(),
            via,
            config.daemon.forward.clone(),
            intake.store().clone(),
            intake.health().clone(),
            cancel.clone(),
        ));
    }
    if let Some(after) = ch.quiet_after() {
        tracker.spawn(channels::quiet::watch(
            ch.name.clone(),
            after,
            intake.clone(),
            cancel.clone(),
        ));
    }
    running.insert(ch.name.clone(), Running { config: ch, cancel });
}

/// Applies added, removed and changed channel files. A config with any error changes nothing.
async fn reload(
    current: Config,
    path: &Path,
    running: &mut BTreeMap<String, Running>,
    tracker: &TaskTracker,
    intake: &Arc<Intake>,
) -> Config {
    let new = match config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                tracing::warn!(error = %e, "Reload refused; the running configuration stays.");
            }
            return current;
        }
    };
    let sinks_and_forward = |d: &crate::config::DaemonConfig| crate::config::DaemonConfig {
        sinks: Default::default(),
        forward: Default::default(),
        ..d.clone()
    };
    if sinks_and_forward(&new.daemon) != sinks_and_forward(&current.daemon) {
        tracing::warn!(file = %path.display(), "Changes to phananh.toml other than [sinks] and [forward] take effect at the next restart; channel and sink changes are applied now.");
    }
    // The rest of the daemon file waits for a restart; own addresses follow the channels'
    // `[ack] from`.
    let next = Config {
        channels: new.channels.clone(),
        ..current.clone()
    };
    intake.set_email_defaults(next.email_defaults());
    let (mut added, mut removed, mut changed) = (0, 0, 0);
    let names: Vec<String> = running.keys().cloned().collect();
    for name in names {
        // Channels with credentials restart on every reload: that re-reads their secret files,
        // which is how an operator recovers a channel whose login was refused.
        let keep = new
            .channels
            .get(&name)
            .is_some_and(|c| *c == running[&name].config && !c.has_secrets());
        if !keep && let Some(r) = running.remove(&name) {
            r.cancel.cancel();
            intake.health().remove(&name);
            intake.health().remove(&format!("{name}:ack"));
            intake.health().remove(&format!("{name}:graph"));
            if new.channels.contains_key(&name) {
                changed += 1;
            } else {
                removed += 1;
            }
        }
    }
    for (name, ch) in &new.channels {
        if !running.contains_key(name) {
            start_channel(running, tracker, ch.clone(), intake, &current);
            added += 1;
        }
    }
    added -= changed.min(added);
    tracing::info!(added, removed, changed, "Configuration reloaded.");
    let mut daemon = current.daemon.clone();
    daemon.sinks = new.daemon.sinks;
    daemon.forward = new.daemon.forward;
    Config {
        channels: new.channels,
        daemon,
        ..current
    }
}

fn start_forwarders(list: Vec<Forwarder>, tracker: &TaskTracker, cancel: &CancellationToken) {
    for f in list {
        tracing::info!(sink = %f.name(), "Forwarder started.");
        tracker.spawn(f.run(cancel.clone()));
    }
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed.");
    }
}

/// The config path from `--config`, `PHANANH_CONFIG`, or the default.
pub fn config_path(arg: Option<PathBuf>) -> PathBuf {
    arg.unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONFIG_PATH))
}

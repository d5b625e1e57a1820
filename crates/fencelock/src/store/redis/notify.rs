//! Release notices from one Redis node: one pub/sub connection, shared by every waiter.
//! For a Redis Cluster store the connection goes to one seed node (the first that
//! answers): a `PUBLISH` there reaches the subscribers of every node.
//!
//! A connection per waiter is how lock clients run a server out of connections, so each
//! node gets a single pub/sub connection, owned by a background task and made on the
//! first watch. Channels are reference-counted: subscribed while someone waits on the
//! key, unsubscribed when the last waiter goes. When the connection drops (node restart),
//! every waiter is woken — notices may have been missed — and the task reconnects and
//! subscribes again while anyone still waits.
//!
//! A release notice names the first waiter in line (see `release.lua`): only that
//! waiter wakes, so a hand-off costs one retry instead of one per waiter. An empty
//! notice wakes everyone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::Client;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::super::url::StoreOptions;
use super::super::{Notice, Watch};
use super::classify;
use crate::error::{NodeError, NodeErrorKind};

pub(super) struct Notifier {
    shared: Arc<Shared>,
    /// This notifier's own address: releases send hand-offs for our waiters to
    /// `<key>:fencelock:to:<inbox>` (see `release.lua`), which only this connection
    /// subscribes to, instead of the key's channel, which every waiting client hears.
    inbox: String,
}

struct Shared {
    /// Where the pub/sub connection may go: the node, or each seed of a Redis Cluster
    /// (a PUBLISH there reaches the subscribers of every node), tried in turn.
    clients: Vec<Client>,
    name: String,
    options: StoreOptions,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Every channel watched, or subscribed and left idle for less than [`LINGER`]
    /// (see [`Channel::idle_since`]).
    channels: HashMap<String, Channel>,
    task: Option<mpsc::UnboundedSender<Command>>,
}

struct Channel {
    watchers: usize,
    /// Every notice for this channel: the waiter it is for ('' for everyone).
    notices: broadcast::Sender<Arc<str>>,
    /// The subscription is confirmed on the current connection: a new watch is armed
    /// at once, with no round trip.
    subscribed: bool,
    /// When the last watcher left (`None` while watched). A channel nobody watches
    /// stays subscribed (and here) for a while: a hot key's waiters come and go many
    /// times a second, and re-subscribing each time would cost two commands per wait.
    /// The connection task unsubscribes it once it has been idle for [`LINGER`];
    /// leaving sends the task nothing, so a waiter that gets the lock goes without a
    /// message to another task on its way.
    idle_since: Option<tokio::time::Instant>,
}

impl Channel {
    fn new() -> Self {
        Channel {
            watchers: 0,
            notices: broadcast::channel(64).0,
            subscribed: false,
            idle_since: Some(tokio::time::Instant::now()),
        }
    }
}

enum Command {
    Subscribe(String, oneshot::Sender<Result<(), NodeError>>),
}

impl Notifier {
    /// `clients`: at least one (see [`Shared::clients`]).
    pub(super) fn new(clients: Vec<Client>, name: String, options: StoreOptions) -> Self {
        Notifier {
            inbox: format!("{:016x}", rand::random::<u64>()),
            shared: Arc::new(Shared {
                clients,
                name,
                options,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// See [`Notifier::inbox`](struct.Notifier.html#structfield.inbox).
    pub(super) fn inbox(&self) -> &str {
        &self.inbox
    }

    /// A watch on `channel` for `waiter` (or for every notice), armed when this returns.
    pub(super) async fn watch(
        &self,
        channel: String,
        waiter: Option<Arc<str>>,
    ) -> Result<Watch, NodeError> {
        let (notices, subscribe) = {
            let mut state = self.shared.lock();
            let (rx, subscribed) = state.join(&channel);
            let subscribe = (!subscribed).then(|| self.shared.command_sender(&mut state));
            (rx, subscribe)
        };
        // From here on, dropping `guard` gives the watcher slot back.
        let guard = WatcherGuard {
            shared: self.shared.clone(),
            channel: channel.clone(),
        };
        if let Some(task) = subscribe {
            let (ack, confirmed) = oneshot::channel();
            let lost = || {
                NodeError::new(
                    NodeErrorKind::Io,
                    &self.shared.name,
                    "pub/sub connection closed",
                )
            };
            task.send(Command::Subscribe(channel, ack))
                .map_err(|_| lost())?;
            confirmed.await.map_err(|_| lost())??;
        }
        Ok(armed(notices, guard, waiter))
    }

    /// A watch on `channel`, armed already, if that costs no round trip (the channel is
    /// subscribed on the live connection, watched or idle); `None` otherwise.
    pub(super) fn watch_now(&self, channel: &str, waiter: Option<Arc<str>>) -> Option<Watch> {
        let notices = {
            let mut state = self.shared.lock();
            if !state.channels.get(channel).is_some_and(|c| c.subscribed) {
                return None;
            }
            state.join(channel).0
        };
        let guard = WatcherGuard {
            shared: self.shared.clone(),
            channel: channel.to_string(),
        };
        Some(armed(notices, guard, waiter))
    }
}

impl State {
    /// One more watcher of `channel`: its receiver, and whether the channel is
    /// subscribed already (watched, or idle: then nothing needs to be sent).
    fn join(&mut self, channel: &str) -> (broadcast::Receiver<Arc<str>>, bool) {
        let entry = self
            .channels
            .entry(channel.to_string())
            .or_insert_with(Channel::new);
        entry.watchers += 1;
        entry.idle_since = None;
        (entry.notices.subscribe(), entry.subscribed)
    }

    /// The channels idle for [`LINGER`] by `now`, taken out: the subscribed ones are
    /// to be unsubscribed. Under the lock, so a watch armed after this finds the
    /// channel gone and subscribes again (after the UNSUBSCRIBE, on the same
    /// connection).
    fn take_idle(&mut self, now: tokio::time::Instant) -> Vec<String> {
        let mut subscribed = Vec::new();
        self.channels.retain(|ch, c| {
            let stale = c.idle_since.is_some_and(|at| now >= at + LINGER);
            if stale && c.subscribed {
                subscribed.push(ch.clone());
            }
            !stale
        });
        subscribed
    }
}

/// Records that `channel` is subscribed on the live connection. A subscription that
/// completes after its last watcher left stays as an idle channel, which the task
/// unsubscribes in time (nobody else would).
fn mark_subscribed(state: &mut State, channel: &str) {
    if let Some(c) = state.channels.get_mut(channel) {
        c.subscribed = true;
    } else {
        let mut c = Channel::new();
        c.subscribed = true;
        state.channels.insert(channel.to_string(), c);
    }
}

/// The watch over an armed receiver: completes with the first notice meant for
/// `waiter`; dropping it gives the watcher slot back (`guard`).
fn armed(
    mut notices: broadcast::Receiver<Arc<str>>,
    guard: WatcherGuard,
    waiter: Option<Arc<str>>,
) -> Watch {
    Watch {
        notified: Box::pin(async move {
            let _guard = guard;
            loop {
                match notices.recv().await {
                    Ok(payload) => {
                        if let Some(notice) = notice_for(&payload, waiter.as_deref()) {
                            return notice;
                        }
                    }
                    // Missed notices (lagged) or the store is gone: wake up, the
                    // waiter retries and finds out.
                    Err(_) => return Notice::Retry,
                }
            }
        }),
    }
}

/// What a release notice (`release.lua`) means to `waiter`; `None`: not meant for it.
///
/// `''` wakes everyone; `'<waiter>'` wakes that waiter; `'granted:<token>:<waiter>'`
/// tells that waiter the lock is already its own. A watch without a waiter id wakes on
/// every notice. A grant whose token does not parse still wakes its waiter: its retry
/// finds the lock handed over and learns the token from the node.
fn notice_for(payload: &str, waiter: Option<&str>) -> Option<Notice> {
    let Some(waiter) = waiter else {
        return Some(Notice::Retry);
    };
    if payload.is_empty() {
        return Some(Notice::Retry);
    }
    if let Some(grant) = payload.strip_prefix(GRANTED) {
        let (token, to) = grant.split_once(':')?;
        return (to == waiter).then(|| match token.parse::<u64>() {
            Ok(token) if token > 0 => Notice::Granted { token },
            _ => Notice::Retry,
        });
    }
    (payload == waiter).then_some(Notice::Retry)
}

/// The head of a hand-off notice (`release.lua`).
const GRANTED: &str = "granted:";

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The running connection task's inbox, starting the task when there is none.
    fn command_sender(self: &Arc<Self>, state: &mut State) -> mpsc::UnboundedSender<Command> {
        if let Some(tx) = &state.task
            && !tx.is_closed()
        {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        state.task = Some(tx.clone());
        tokio::spawn(run(Arc::downgrade(self), rx));
        tx
    }

    /// Wakes every waiter: used when notices may have been missed.
    fn wake_all(&self, unsubscribed: bool) {
        let mut state = self.lock();
        for ch in state.channels.values_mut() {
            let _ = ch.notices.send(Arc::from(""));
            if unsubscribed {
                ch.subscribed = false;
            }
        }
    }
}

struct WatcherGuard {
    shared: Arc<Shared>,
    channel: String,
}

impl Drop for WatcherGuard {
    /// The channel stays, idle when this was its last watcher (see
    /// [`Channel::idle_since`]).
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(entry) = state.channels.get_mut(&self.channel) {
            entry.watchers -= 1;
            if entry.watchers == 0 {
                entry.idle_since = Some(tokio::time::Instant::now());
            }
        }
    }
}

/// The connection task: (re)connects, keeps the subscriptions, turns messages into
/// wake-ups. Ends when the store is dropped.
async fn run(shared: std::sync::Weak<Shared>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut failures: u32 = 0;
    let mut pending: Vec<Command> = Vec::new();
    loop {
        // Nobody waits: stay disconnected until someone does (idle channels are not
        // subscribed again).
        let idle = shared.upgrade().is_none_or(|s| {
            let mut state = s.lock();
            state.channels.retain(|_, c| c.watchers > 0);
            state.channels.is_empty()
        });
        if idle && pending.is_empty() {
            match commands.recv().await {
                Some(subscribe) => pending.push(subscribe),
                None => return,
            }
        }
        let Some(s) = shared.upgrade() else { return };
        let pubsub = match connect_any(&s, failures as usize).await {
            Ok(p) => p,
            Err(e) => {
                fail_pending(&s, &mut pending, &mut commands, &e);
                drop(s);
                failures += 1;
                backoff(failures).await;
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        // Subscribe again to everything still watched, then wake the watchers: notices
        // sent while we were away are lost.
        let wanted: Vec<String> = s.lock().channels.keys().cloned().collect();
        let mut ok = true;
        for ch in &wanted {
            if sink.subscribe(ch).await.is_err() {
                ok = false;
                break;
            }
        }
        if !ok {
            drop(s);
            failures += 1;
            backoff(failures).await;
            continue;
        }
        {
            let mut state = s.lock();
            for ch in &wanted {
                mark_subscribed(&mut state, ch);
            }
        }
        if failures > 0 {
            s.wake_all(false);
        }
        for command in pending.drain(..) {
            let Command::Subscribe(ch, ack) = command;
            let result = sink.subscribe(&ch).await.map_err(|e| classify(&s.name, &e));
            if result.is_ok() {
                mark_subscribed(&mut s.lock(), &ch);
            }
            let _ = ack.send(result);
        }
        drop(s);

        // Idle channels are looked for every LINGER: each goes between one and two
        // LINGERs after its last watcher left.
        let mut sweep = tokio::time::interval_at(tokio::time::Instant::now() + LINGER, LINGER);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                now = sweep.tick() => {
                    let Some(s) = shared.upgrade() else { return };
                    let idle = s.lock().take_idle(now);
                    drop(s);
                    let mut broken = false;
                    for ch in idle {
                        if sink.unsubscribe(&ch).await.is_err() {
                            broken = true;
                            break;
                        }
                    }
                    if broken {
                        break;
                    }
                }
                command = commands.recv() => {
                    let Some(Command::Subscribe(ch, ack)) = command else { return };
                    let Some(s) = shared.upgrade() else { return };
                    // Subscribed meanwhile (another watch's request): nothing to send.
                    let known = s.lock().channels.get(&ch).is_some_and(|c| c.subscribed);
                    drop(s);
                    let result = if known { Ok(()) } else { sink.subscribe(&ch).await };
                    let Some(s) = shared.upgrade() else { return };
                    match result {
                        Ok(()) => {
                            mark_subscribed(&mut s.lock(), &ch);
                            let _ = ack.send(Ok(()));
                        }
                        Err(e) => {
                            let _ = ack.send(Err(classify(&s.name, &e)));
                            break;
                        }
                    }
                }
                message = stream.next() => {
                    let Some(s) = shared.upgrade() else { return };
                    let Some(message) = message else { break };
                    let channel = message.get_channel_name().to_string();
                    let to: Arc<str> = message
                        .get_payload::<String>()
                        .map(Arc::from)
                        .unwrap_or_else(|_| Arc::from(""));
                    if let Some(c) = s.lock().channels.get(&channel) {
                        let _ = c.notices.send(to);
                    }
                }
            }
        }
        // The connection broke: wake everyone (they retry, and watch again).
        let Some(s) = shared.upgrade() else { return };
        s.wake_all(true);
        failures = 1;
        drop(s);
        backoff(failures).await;
    }
}

/// A pub/sub connection to the first of `s.clients` that takes one, starting at
/// `start` (mod their number): a standalone node has one; a Redis Cluster has one per
/// seed, and a seed that is down must not cost the waiters their notices. The error is
/// the last one met.
async fn connect_any(s: &Shared, start: usize) -> Result<redis::aio::PubSub, NodeError> {
    let n = s.clients.len();
    let mut last = NodeError::new(NodeErrorKind::Io, &s.name, "no node to subscribe on");
    for k in 0..n {
        let client = &s.clients[(start + k) % n];
        match tokio::time::timeout(s.options.connect_timeout, client.get_async_pubsub()).await {
            Ok(Ok(p)) => return Ok(p),
            Ok(Err(e)) => last = classify(&s.name, &e),
            Err(_) => {
                last = NodeError::new(NodeErrorKind::Timeout, &s.name, "pub/sub connect timed out");
            }
        }
    }
    Err(last)
}

/// Answers queued subscribe requests with the connection error, so their waiters fall
/// back to sleeping until the holder's TTL instead of hanging.
fn fail_pending(
    s: &Shared,
    pending: &mut Vec<Command>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    error: &NodeError,
) {
    while let Ok(command) = commands.try_recv() {
        pending.push(command);
    }
    for Command::Subscribe(ch, ack) in pending.drain(..) {
        if let Some(c) = s.lock().channels.get_mut(&ch) {
            c.subscribed = false;
        }
        let _ = ack.send(Err(error.clone()));
    }
}

/// How long a channel stays subscribed at least after its last waiter left (at most
/// twice this).
const LINGER: Duration = Duration::from_secs(2);

async fn backoff(failures: u32) {
    let ms = 50u64.saturating_mul(1 << failures.min(5)).min(1000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_reach_only_the_waiter_they_name() {
        let me = Some("handoff:1000:ab");
        assert_eq!(notice_for("", me), Some(Notice::Retry));
        assert_eq!(notice_for("handoff:1000:ab", me), Some(Notice::Retry));
        assert_eq!(notice_for("handoff:1000:cd", me), None);
        assert_eq!(
            notice_for("granted:1700000000000001:handoff:1000:ab", me),
            Some(Notice::Granted {
                token: 1_700_000_000_000_001
            })
        );
        assert_eq!(notice_for("granted:17:handoff:1000:cd", me), None);
        // A grant that does not parse still wakes its waiter (the retry learns more).
        assert_eq!(
            notice_for("granted:x:handoff:1000:ab", me),
            Some(Notice::Retry)
        );
        assert_eq!(
            notice_for("granted:0:handoff:1000:ab", me),
            Some(Notice::Retry)
        );
        assert_eq!(notice_for("granted:", me), None);
        // No waiter id: every notice wakes.
        assert_eq!(notice_for("someone", None), Some(Notice::Retry));
        assert_eq!(notice_for("granted:5:someone", None), Some(Notice::Retry));
    }
}

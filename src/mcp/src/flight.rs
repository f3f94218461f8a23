//! A tool call in flight: its work runs as a task of its own, and the request that started it
//! watches it — for questions to put to the client's user, for progress to report, and for
//! how long a person has kept it waiting. A call that waits for a person can outlast the
//! request: it is *detached* into the session (its work carries on, held at the approval) and
//! the request answers now, with
//!
//! - an **input-required** result (the stateless 2026-07-28 revision): the question, and a
//!   `requestState` handle; the client calls again with the answer and the handle, and the
//!   same call resumes;
//! - a **`pending_approval`** result, when the person has not answered within
//!   `--pending-after` (hosts give up on a tool call after about a minute): the `approval_id`,
//!   which `approval_wait` resumes.
//!
//! Either way the call resumed is the one that was held, at the card that was shown: nothing
//! is run again, and an answer applies to nothing else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use luminaguard_api::types::ApprovalView;
use luminaguard_front::Front;
use luminaguard_service::Answer;
use rmcp::model::{CallToolResult, ProgressNotificationParam, ProgressToken};
use rmcp::{ErrorData, Peer, RoleServer};
use tokio::task::JoinHandle;

use crate::approve::{self, Shared};

/// First look at the approvals after a call starts (a quicker call never looks), then how
/// often while it runs; an approval the service announces is looked at at once.
const FIRST_LOOK: Duration = Duration::from_millis(100);
const LOOK: Duration = Duration::from_millis(200);
/// Progress notices: at most one a second while output arrives, and one every few seconds
/// while nothing does (a host that counts its timeout from the last notice keeps waiting).
const PROGRESS_TICK: Duration = Duration::from_secs(1);
const PROGRESS_QUIET: u32 = 5;

/// What a call's work tells the request watching it.
#[derive(Debug, Default)]
pub struct Track {
    /// Bytes of output so far.
    pub output: AtomicU64,
    /// Approvals this call met (taken up by the watcher): reported with its result.
    met: Mutex<Vec<String>>,
}

impl Track {
    pub fn met(&self) -> Vec<String> {
        self.met
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn meet(&self, id: &str) {
        let mut met = self
            .met
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !met.iter().any(|m| m == id) {
            met.push(id.to_owned());
        }
    }
}

/// What a call's work ends with (a tool call's result; another request's answer).
pub type Work<T = CallToolResult> = Result<T, ErrorData>;

/// A call's work, running.
#[derive(Debug)]
pub struct Flight<T: Send + 'static = CallToolResult> {
    pub tool: String,
    /// Its arguments (a call resumed must be the same call).
    pub arguments: Option<rmcp::model::JsonObject>,
    /// The command it runs, when it is one (to tell its approvals from another call's).
    argv: Option<Vec<String>>,
    task: JoinHandle<Work<T>>,
    pub track: Arc<Track>,
    started: Instant,
    /// The approval it waits on, taken up by this call.
    waiting: Option<ApprovalView>,
}

impl<T: Send + 'static> Drop for Flight<T> {
    /// A call dropped unfinished (cancelled, its session ended) ends its work: the command is
    /// killed with its process tree and a card it waits on withdrawn.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How the client can be asked, for this request.
#[derive(Debug, Clone)]
pub enum Asking {
    /// `elicitation/create` on the session (2025 revisions, elicitation declared).
    Elicit(Peer<RoleServer>),
    /// An input-required result (2026-07-28, elicitation declared on the request).
    InputRequired,
    /// Neither.
    Nobody,
}

/// What the request watching a call needs.
pub struct Watch<'a> {
    pub front: &'a Front,
    pub shared: &'a Shared,
    pub asking: Asking,
    /// Where progress goes (the request's progress token), if anywhere.
    pub progress: Option<(Peer<RoleServer>, ProgressToken)>,
    /// How long a person may keep the request waiting before it answers `pending_approval`.
    pub pending_after: Option<Duration>,
    pub cancelled: &'a tokio_util::sync::CancellationToken,
}

/// Where a watched call stands when its request answers.
pub enum Step<T = CallToolResult> {
    Done(Work<T>),
    /// The client must answer `ApprovalView`'s question (2026-07-28 input-required).
    Input(Box<ApprovalView>),
    /// A person has not answered in time: the approval's id.
    Pending(String),
}

/// A call ended by its client.
#[derive(Debug)]
pub struct Cancelled;

impl<T: Send + 'static> Flight<T> {
    pub fn start(
        tool: String,
        arguments: Option<rmcp::model::JsonObject>,
        argv: Option<Vec<String>>,
        track: Arc<Track>,
        work: impl Future<Output = Work<T>> + Send + 'static,
    ) -> Self {
        Self {
            tool,
            arguments,
            argv,
            task: tokio::spawn(work),
            track,
            started: Instant::now(),
            waiting: None,
        }
    }

    /// Whether this call met approval `id`.
    pub fn met(&self, id: &str) -> bool {
        self.track.met().iter().any(|m| m == id)
    }

    /// Answers the approval this call waits on with the client's input response (an
    /// elicitation result), and lets the call carry on.
    pub async fn answer(&mut self, front: &Front, response: Option<&serde_json::Value>) {
        if let Some(a) = self.waiting.take() {
            let (answer, said) = approve::read_answer(response);
            approve::answer(front, &a, answer, &format!("{said} (input-required)")).await;
        }
    }

    /// Watches the call until it ends, needs the client's answer, or has waited too long for a
    /// person's.
    pub async fn watch(&mut self, w: &Watch<'_>) -> Result<Step<T>, Cancelled> {
        let start = tokio::time::Instant::now();
        let mut look = tokio::time::interval_at(start + FIRST_LOOK, LOOK);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval_at(start + PROGRESS_TICK, PROGRESS_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut notices = Notices::default();
        // The service's announcements of approvals asked for: each makes the next look now,
        // not at its tick (the ticks stay, for answers given elsewhere and a lost stream).
        // Subscribing runs beside the call (through the daemon it is a request of its own).
        let subscribe = w.front.approval_requests();
        tokio::pin!(subscribe);
        let mut subscribed = false;
        let mut requests = None;
        // Since when a person keeps this request waiting.
        let mut held_since: Option<tokio::time::Instant> = self.waiting.as_ref().map(|_| start);
        loop {
            let hold_ends = match (held_since, w.pending_after) {
                (Some(since), Some(after)) => Some(since + after),
                _ => None,
            };
            tokio::select! {
                done = &mut self.task => {
                    return Ok(Step::Done(done.unwrap_or_else(|e| {
                        Err(ErrorData::internal_error(format!("the call failed: {e}"), None))
                    })));
                }
                () = w.cancelled.cancelled() => {
                    self.task.abort();
                    return Err(Cancelled);
                }
                () = sleep_until(hold_ends) => {
                    if let Some(a) = &self.waiting {
                        return Ok(Step::Pending(a.id.clone()));
                    }
                    held_since = None;
                }
                _ = look.tick() => {
                    if let Some(a) = &self.waiting {
                        // Answered (here or elsewhere)? Then the call runs on, unheld.
                        let pending = w.front.approval(&a.id, false).await
                            .map(|a| a.state == "pending")
                            .unwrap_or(false);
                        if !pending {
                            self.waiting = None;
                            held_since = None;
                        }
                        continue;
                    }
                    let found = match w.shared.claim_next(w.front, self.argv.as_deref()).await {
                        Ok(found) => found,
                        Err(e) => {
                            tracing::debug!(error = %e, "looking at the approvals");
                            continue;
                        }
                    };
                    let Some(a) = found else { continue };
                    self.track.meet(&a.id);
                    match self.take_up(w, a).await {
                        Some(a) => return Ok(Step::Input(Box::new(a))),
                        None => {
                            if self.waiting.is_some() {
                                held_since = Some(tokio::time::Instant::now());
                            }
                        }
                    }
                }
                r = &mut subscribe, if !subscribed => {
                    subscribed = true;
                    requests = r.ok();
                }
                got = next_request(&mut requests) => match got {
                    Some(_) => look.reset_immediately(),
                    None => requests = None,
                },
                _ = tick.tick(), if w.progress.is_some() => {
                    notices.send(w, self).await;
                }
            }
        }
    }

    /// Puts approval `a` to the client as it can be asked; returns it when the request must
    /// answer with the question (input-required).
    async fn take_up(&mut self, w: &Watch<'_>, a: ApprovalView) -> Option<ApprovalView> {
        match &w.asking {
            Asking::InputRequired => {
                self.waiting = Some(a.clone());
                Some(a)
            }
            Asking::Elicit(peer) => {
                // Asked in a task of its own: the request may answer `pending_approval` while
                // the client's user still looks at the question.
                let (peer, front) = (peer.clone(), w.front.clone());
                let card = a.clone();
                tokio::spawn(async move {
                    match approve::elicit(&peer, &card.card.text).await {
                        Some((answer, said)) => {
                            approve::answer(
                                &front,
                                &card,
                                answer,
                                &format!("{said} (elicitation)"),
                            )
                            .await;
                        }
                        None if !front.answerable_elsewhere() => {
                            approve::answer(
                                &front,
                                &card,
                                Answer::Deny,
                                "the MCP client could not be asked, and nobody else can answer \
                                 here (no daemon)",
                            )
                            .await;
                        }
                        None => {}
                    }
                });
                self.waiting = Some(a);
                None
            }
            Asking::Nobody if w.front.answerable_elsewhere() => {
                // Someone else answers (the daemon's front says where, on stderr).
                self.waiting = Some(a);
                None
            }
            Asking::Nobody => {
                approve::answer(
                    w.front,
                    &a,
                    Answer::Deny,
                    "nobody to ask: the MCP client declared no elicitation, and no daemon runs \
                     to take anyone else's answer",
                )
                .await;
                None
            }
        }
    }
}

async fn sleep_until(when: Option<tokio::time::Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}

/// The progress notices of one request.
#[derive(Default)]
struct Notices {
    sent: u64,
    output_then: u64,
    /// The approval the last notice said the call waits on.
    waiting_then: Option<String>,
    quiet: u32,
}

impl Notices {
    async fn send<T: Send + 'static>(&mut self, w: &Watch<'_>, f: &Flight<T>) {
        let Some((peer, token)) = &w.progress else {
            return;
        };
        let output = f.track.output.load(Ordering::Relaxed);
        let waiting = f.waiting.as_ref().map(|a| a.id.clone());
        self.quiet += 1;
        // Said at once: new output, or a person now awaited; else every few seconds.
        if output == self.output_then && waiting == self.waiting_then && self.quiet < PROGRESS_QUIET
        {
            return;
        }
        self.quiet = 0;
        self.output_then = output;
        self.waiting_then = waiting;
        self.sent += 1;
        let secs = f.started.elapsed().as_secs();
        let message = match &f.waiting {
            Some(a) => format!(
                "{}: waiting for a person's approval ({}) for {secs} s",
                f.tool, a.id
            ),
            None => format!("{}: running for {secs} s, {output} bytes of output", f.tool),
        };
        let mut notice = ProgressNotificationParam::new(token.clone(), self.sent as f64);
        notice.message = Some(message);
        if let Err(e) = peer.notify_progress(notice).await {
            tracing::debug!(error = %e, "sending a progress notice");
        }
    }
}

/// The next approval asked for, or never when there is no stream to hear it from.
async fn next_request(
    requests: &mut Option<luminaguard_front::ApprovalRequests>,
) -> Option<luminaguard_front::Requested> {
    match requests {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

//! A client of the master replicas that finds and follows the leader.
//!
//! Any replica serves reads. A follower answers writes with `UNAVAILABLE` and the leader's
//! address (see `borg_proto::leader`); this client retries there at once. When a replica is
//! down or no leader is known it tries the next one, backing off after each full round.
//! Retrying writes is safe because every mutation carries a request id.

use crate::auth::{is_valid_token, AUTHORIZATION_HEADER, BEARER_PREFIX};
use borg_proto::leader::leader_hint;
use borg_proto::v1;
use borg_proto::v1::cell_service_client::CellServiceClient;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

/// What `MasterClient::call` hands to its operation: a channel to one replica that attaches
/// the client's token to every request.
pub type MasterChannel = InterceptedService<Channel, TokenInterceptor>;

/// Adds `authorization: Bearer TOKEN` to every request (nothing without a token).
#[derive(Debug, Clone, Default)]
pub struct TokenInterceptor {
    header: Option<MetadataValue<Ascii>>,
}

impl TokenInterceptor {
    pub fn new(token: Option<&str>) -> Result<Self, Status> {
        let header = match token {
            None => None,
            Some(token) => {
                let invalid = || {
                    Status::invalid_argument(
                        "the token is not one word of printable ASCII: check --token, BORG_TOKEN or the token file",
                    )
                };
                if !is_valid_token(token) {
                    return Err(invalid());
                }
                Some(
                    format!("{BEARER_PREFIX}{token}")
                        .parse()
                        .map_err(|_| invalid())?,
                )
            }
        };
        Ok(TokenInterceptor { header })
    }
}

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert(AUTHORIZATION_HEADER, header.clone());
        }
        Ok(request)
    }
}

#[derive(Debug, Clone)]
pub struct MasterClientConfig {
    /// `host:port` of every master replica.
    pub endpoints: Vec<String>,
    pub connect_timeout_ms: u64,
    /// Per-attempt deadline of a unary call.
    pub request_timeout_ms: u64,
    /// Give up after this long of failed attempts.
    pub call_deadline_ms: u64,
    /// First back-off after a full round of replicas failed; doubles up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Bearer token sent with every call (see `crate::auth`); None sends none.
    pub token: Option<String>,
}

impl MasterClientConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        MasterClientConfig {
            endpoints,
            connect_timeout_ms: 1_000,
            request_timeout_ms: 10_000,
            call_deadline_ms: 15_000,
            backoff_initial_ms: 50,
            backoff_max_ms: 1_000,
            token: None,
        }
    }
}

/// Most attempts of one call, whatever the deadline says: a bound on every retry loop.
const CALL_ATTEMPTS_MAX: u32 = 200;

pub struct MasterClient {
    config: MasterClientConfig,
    interceptor: TokenInterceptor,
    /// Endpoint believed to lead (index into a list that may grow with leader hints).
    state: Mutex<ClientState>,
}

struct ClientState {
    endpoints: Vec<String>,
    current: usize,
    channels: HashMap<String, Channel>,
}

impl MasterClient {
    pub fn new(config: MasterClientConfig) -> Result<Self, Status> {
        if config.endpoints.is_empty() {
            return Err(Status::invalid_argument(
                "no master endpoints given: pass --master HOST:PORT (comma-separated for several)",
            ));
        }
        let endpoints = config.endpoints.clone();
        let interceptor = TokenInterceptor::new(config.token.as_deref())?;
        Ok(MasterClient {
            config,
            interceptor,
            state: Mutex::new(ClientState {
                endpoints,
                current: 0,
                channels: HashMap::new(),
            }),
        })
    }

    pub fn from_endpoints(endpoints: Vec<String>) -> Result<Self, Status> {
        Self::new(MasterClientConfig::new(endpoints))
    }

    /// Address the client currently sends to.
    pub fn current_endpoint(&self) -> String {
        let state = self.state.lock().expect("master client lock");
        state.endpoints[state.current].clone()
    }

    fn channel(&self, address: &str) -> Result<MasterChannel, Status> {
        let mut state = self.state.lock().expect("master client lock");
        if let Some(channel) = state.channels.get(address) {
            return Ok(InterceptedService::new(
                channel.clone(),
                self.interceptor.clone(),
            ));
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| Status::invalid_argument(format!("bad master address {address:?}: {e}")))?
            .connect_timeout(Duration::from_millis(self.config.connect_timeout_ms))
            .timeout(Duration::from_millis(self.config.request_timeout_ms))
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        state.channels.insert(address.to_owned(), channel.clone());
        Ok(InterceptedService::new(channel, self.interceptor.clone()))
    }

    fn follow(&self, leader: &str) {
        let mut state = self.state.lock().expect("master client lock");
        match state.endpoints.iter().position(|e| e == leader) {
            Some(i) => state.current = i,
            None => {
                state.endpoints.push(leader.to_owned());
                state.current = state.endpoints.len() - 1;
            }
        }
    }

    /// Moves to the next replica.
    fn advance(&self) {
        let mut state = self.state.lock().expect("master client lock");
        state.current = (state.current + 1) % state.endpoints.len();
    }

    fn endpoint_count(&self) -> usize {
        self.state
            .lock()
            .expect("master client lock")
            .endpoints
            .len()
    }

    /// Opens a `SubmitJobs` stream (see `SubmitStream`) at the replica this client sends to,
    /// trying the next one while replicas are unavailable. Any replica takes it: followers
    /// forward each write to the leader.
    pub async fn submit_stream(&self, in_flight_max: usize) -> Result<SubmitStream, Status> {
        let reply_timeout = Duration::from_millis(self.config.request_timeout_ms);
        self.call(|channel| SubmitStream::open(channel, in_flight_max, reply_timeout))
            .await
    }

    /// Runs `op` on a channel to the leader (or any replica, for reads that any replica
    /// serves), following leader hints and retrying unavailable replicas within the bounds
    /// of the configuration.
    pub async fn call<T, F, Fut>(&self, mut op: F) -> Result<T, Status>
    where
        F: FnMut(MasterChannel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.config.call_deadline_ms);
        let mut backoff_ms = self.config.backoff_initial_ms;
        // Failed attempts since the last back-off. Hints can send a client round in circles
        // (a leader that is elected but not yet ready names itself, its followers name it
        // back), so a back-off follows every full round of failures, hints included.
        let mut failures_since_backoff = 0usize;
        let mut last_error = Status::unavailable("no master replica answered");
        for _ in 0..CALL_ATTEMPTS_MAX {
            let address = self.current_endpoint();
            let channel = self.channel(&address)?;
            let status = match op(channel).await {
                Ok(value) => return Ok(value),
                Err(status) => status,
            };
            let hint = leader_hint(&status);
            if hint.is_none() && !is_retryable(&status) {
                return Err(status);
            }
            failures_since_backoff += 1;
            let mut back_off = failures_since_backoff >= self.endpoint_count();
            match hint {
                Some(leader) if leader != address => {
                    tracing::debug!(from = %address, to = %leader, "following leader hint");
                    self.follow(&leader);
                }
                Some(_) => {
                    // The replica names itself: it leads but cannot serve yet. Ask it again.
                    back_off = true;
                }
                None => {
                    tracing::debug!(replica = %address, error = %status.message(), "master replica unavailable");
                    self.advance();
                }
            }
            last_error = status;
            if back_off {
                if tokio::time::Instant::now() + Duration::from_millis(backoff_ms) > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(self.config.backoff_max_ms);
                failures_since_backoff = 0;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        Err(Status::new(
            last_error.code(),
            format!(
                "no master replica could serve the request (tried {}): {}",
                self.state
                    .lock()
                    .expect("master client lock")
                    .endpoints
                    .join(", "),
                last_error.message()
            ),
        ))
    }
}

/// Many writes in flight on one `CellService.SubmitJobs` stream, each caller awaiting its
/// own answer: one HTTP/2 stream instead of one call per write, which is what a unary
/// `SubmitJob` mostly costs the leader. At most `in_flight_max` writes are outstanding;
/// further callers wait for a slot. A request without an id gets a fresh one (replies are
/// matched by id, so two writes in flight must not share one).
///
/// A write's failure comes back as the status `SubmitJob` would have returned. If the stream
/// breaks, every outstanding and later write fails with `UNAVAILABLE`; the caller opens a new
/// stream (perhaps at another replica) and retries with the same request ids.
pub struct SubmitStream {
    requests: mpsc::Sender<v1::SubmitJobRequest>,
    waiters: Arc<Mutex<Waiters>>,
    slots: Arc<Semaphore>,
    reply_timeout: Duration,
    reader: tokio::task::JoinHandle<()>,
}

/// Callers awaiting their replies, by request id; `closed` once the reply stream ended.
#[derive(Default)]
struct Waiters {
    by_request_id: HashMap<String, oneshot::Sender<v1::SubmitJobsReply>>,
    closed: Option<Status>,
}

impl SubmitStream {
    /// Opens the stream on `channel`. A write not answered within `reply_timeout` fails with
    /// `DEADLINE_EXCEEDED` (its outcome unknown: retry it with the same request id).
    pub async fn open(
        channel: MasterChannel,
        in_flight_max: usize,
        reply_timeout: Duration,
    ) -> Result<SubmitStream, Status> {
        let in_flight_max = in_flight_max.max(1);
        let (requests, outgoing) = mpsc::channel(in_flight_max);
        let mut replies = CellServiceClient::new(channel)
            .submit_jobs(ReceiverStream::new(outgoing))
            .await?
            .into_inner();
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let reader = {
            let waiters = waiters.clone();
            tokio::spawn(async move {
                let ended = loop {
                    match replies.message().await {
                        Ok(Some(reply)) => {
                            let waiter = lock(&waiters).by_request_id.remove(&reply.request_id);
                            if let Some(waiter) = waiter {
                                // A caller that timed out no longer waits.
                                let _ = waiter.send(reply);
                            }
                        }
                        Ok(None) => {
                            break Status::unavailable("the replica closed the submit stream")
                        }
                        Err(status) => break status,
                    }
                };
                let mut waiters = lock(&waiters);
                // Dropping the senders fails every outstanding write.
                waiters.by_request_id.clear();
                waiters.closed = Some(ended);
            })
        };
        Ok(SubmitStream {
            requests,
            waiters,
            slots: Arc::new(Semaphore::new(in_flight_max)),
            reply_timeout,
            reader,
        })
    }

    /// Sends one submit and waits for its outcome: the reply (index, created) once
    /// committed, else the status the write was refused with.
    pub async fn submit(
        &self,
        mut request: v1::SubmitJobRequest,
    ) -> Result<v1::SubmitJobsReply, Status> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the submit stream is closed"))?;
        if request.request_id.is_empty() {
            request.request_id = crate::new_request_id("stream");
        }
        let request_id = request.request_id.clone();
        let (reply, answer) = oneshot::channel();
        {
            let mut waiters = lock(&self.waiters);
            if let Some(ended) = &waiters.closed {
                return Err(stream_broken(ended));
            }
            if waiters.by_request_id.contains_key(&request_id) {
                return Err(Status::invalid_argument(format!(
                    "request id {request_id:?} is already in flight on this stream; wait for its answer"
                )));
            }
            waiters.by_request_id.insert(request_id.clone(), reply);
        }
        if self.requests.send(request).await.is_err() {
            lock(&self.waiters).by_request_id.remove(&request_id);
            return Err(Status::unavailable(
                "the submit stream is closed; retry with the same request id",
            ));
        }
        match tokio::time::timeout(self.reply_timeout, answer).await {
            Ok(Ok(reply)) if reply.code == Code::Ok as i32 => Ok(reply),
            Ok(Ok(reply)) => Err(Status::new(Code::from(reply.code), reply.message)),
            Ok(Err(_)) => {
                let waiters = lock(&self.waiters);
                Err(match &waiters.closed {
                    Some(ended) => stream_broken(ended),
                    None => Status::unavailable("the submit stream ended"),
                })
            }
            Err(_) => {
                lock(&self.waiters).by_request_id.remove(&request_id);
                Err(Status::deadline_exceeded(format!(
                    "write {request_id} was not answered within {} ms; its outcome is unknown: retry with the same request id",
                    self.reply_timeout.as_millis()
                )))
            }
        }
    }
}

impl Drop for SubmitStream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The waiters' lock; a panic while holding it cannot leave the map inconsistent.
fn lock(waiters: &Mutex<Waiters>) -> std::sync::MutexGuard<'_, Waiters> {
    waiters
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn stream_broken(ended: &Status) -> Status {
    Status::unavailable(format!(
        "the submit stream broke ({}); open a new one and retry with the same request id",
        ended.message()
    ))
}

/// Unavailable replicas and transport failures are worth another replica; everything else
/// (bad arguments, permission, not found, ...) is the answer.
fn is_retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_attached_as_a_bearer_header_and_bad_ones_refused() {
        let mut with = TokenInterceptor::new(Some("abc123")).unwrap();
        let request = with.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get(AUTHORIZATION_HEADER).unwrap(),
            "Bearer abc123"
        );
        let mut without = TokenInterceptor::new(None).unwrap();
        assert!(without
            .call(Request::new(()))
            .unwrap()
            .metadata()
            .get(AUTHORIZATION_HEADER)
            .is_none());
        let error = TokenInterceptor::new(Some("two words")).unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
    }

    #[test]
    fn an_empty_endpoint_list_is_refused() {
        assert!(MasterClient::from_endpoints(vec![]).is_err());
    }

    #[tokio::test]
    async fn leader_hints_are_followed_and_errors_returned() {
        let client =
            MasterClient::from_endpoints(vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()]).unwrap();
        let mut seen = Vec::new();
        let result: Result<u32, Status> = client
            .call(|_channel| {
                let address = client.current_endpoint();
                seen.push(address.clone());
                async move {
                    if address == "127.0.0.1:3" {
                        Ok(7)
                    } else {
                        Err(borg_proto::leader::not_leader(Some("127.0.0.1:3")))
                    }
                }
            })
            .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(seen, vec!["127.0.0.1:1", "127.0.0.1:3"]);

        let denied: Result<(), Status> = client
            .call(|_| async { Err(Status::permission_denied("no")) })
            .await;
        assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    }

    #[tokio::test]
    async fn a_leader_that_is_not_ready_yet_is_waited_for_not_circled() {
        // Replica :1 names :2 as leader; :2 names itself until it is ready (as a just-elected
        // leader does), which takes longer than the attempts bound would last without
        // back-off.
        let client =
            MasterClient::from_endpoints(vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()]).unwrap();
        let ready_at = tokio::time::Instant::now() + Duration::from_millis(400);
        let mut attempts = 0u32;
        let result: Result<&str, Status> = client
            .call(|_| {
                attempts += 1;
                let address = client.current_endpoint();
                async move {
                    if address == "127.0.0.1:2" && tokio::time::Instant::now() >= ready_at {
                        Ok("served")
                    } else {
                        Err(borg_proto::leader::not_leader(Some("127.0.0.1:2")))
                    }
                }
            })
            .await;
        assert_eq!(result.unwrap(), "served");
        assert!(
            attempts < 50,
            "backed off instead of spinning: {attempts} attempts"
        );
    }

    #[tokio::test]
    async fn unavailable_replicas_are_retried_within_the_deadline() {
        let mut config = MasterClientConfig::new(vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()]);
        config.call_deadline_ms = 300;
        config.backoff_initial_ms = 10;
        let client = MasterClient::new(config).unwrap();
        let mut attempts = 0;
        let result: Result<(), Status> = client
            .call(|_| {
                attempts += 1;
                async { Err(Status::unavailable("down")) }
            })
            .await;
        let error = result.unwrap_err();
        assert_eq!(error.code(), Code::Unavailable);
        assert!(
            error.message().contains("127.0.0.1:2"),
            "{}",
            error.message()
        );
        assert!(attempts >= 2 && attempts < CALL_ATTEMPTS_MAX as usize);
    }
}

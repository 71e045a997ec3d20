//! Authentication at the RPC edge (docs/security.md): who sent a request, from the bearer
//! token in its `authorization` metadata.
//!
//! - The cluster token (from `AuthConfig::cluster_token_file`) is the control plane: the
//!   only caller of `SchedulerService` and `LinkService`; it may read the cell too.
//! - The bootstrap admin token (`AuthConfig::admin_token_file`) is the admin user
//!   `AuthConfig::admin_user`, accepted by every replica from its configuration.
//! - Any other token must be registered in the replicated state (`borg token create`).
//!
//! An interceptor puts the `Identity` into the request's extensions; handlers read it with
//! `identity`. Without an `AuthConfig` the replica is open (`Identity::Open`): user commands
//! are trusted as they are, without ownership or quota checks.

use crate::state::{CellState, Command};
use borg_common::auth::{load_or_create_token_file, token_hash, TokenFileError, BEARER_PREFIX};
use prometheus::{IntCounterVec, Opts, Registry};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use tonic::{Request, Status};

/// Where a replica finds its bootstrap tokens. Every replica of a cell must be given the
/// same files (they are created with a random token if missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub admin_token_file: PathBuf,
    /// User name of the bootstrap admin.
    pub admin_user: String,
    pub cluster_token_file: PathBuf,
}

impl AuthConfig {
    /// `admin.token` and `cluster.token` in `dir`, admin user `admin_user`.
    pub fn in_dir(dir: &std::path::Path, admin_user: &str) -> Self {
        AuthConfig {
            admin_token_file: dir.join("admin.token"),
            admin_user: admin_user.to_owned(),
            cluster_token_file: dir.join("cluster.token"),
        }
    }
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Authentication is off on this replica.
    Open,
    /// The cluster token: scheduler, link shards, borglets.
    ControlPlane,
    User(crate::state::Caller),
}

/// The hashes a replica accepts besides the registered tokens.
#[derive(Debug, Clone)]
struct Keys {
    admin_sha256: String,
    admin_user: String,
    cluster_sha256: String,
}

/// Refusals at the edge and in admission, by reason (`unauthenticated`,
/// `permission_denied`, `no_quota`, `quota_exceeded`).
#[derive(Clone)]
pub struct AuthMetrics {
    pub requests_refused: IntCounterVec,
    pub submits_refused: IntCounterVec,
}

impl AuthMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests_refused = IntCounterVec::new(
            Opts::new(
                "auth_requests_refused_total",
                "Requests refused by authentication or role checks at the RPC edge, by reason",
            ),
            &["reason"],
        )?;
        let submits_refused = IntCounterVec::new(
            Opts::new(
                "admission_submits_refused_total",
                "Users' submits refused in the state machine (ownership, band, quota), by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(requests_refused.clone()))?;
        registry.register(Box::new(submits_refused.clone()))?;
        Ok(AuthMetrics {
            requests_refused,
            submits_refused,
        })
    }
}

#[derive(Clone)]
pub struct Authenticator {
    state: Arc<RwLock<CellState>>,
    keys: Option<Arc<Keys>>,
    pub metrics: AuthMetrics,
}

impl Authenticator {
    /// Reads (or creates) the token files of `config`; None: authentication off.
    pub fn load(
        config: Option<&AuthConfig>,
        state: Arc<RwLock<CellState>>,
        metrics: AuthMetrics,
    ) -> Result<Self, TokenFileError> {
        let keys = match config {
            None => None,
            Some(config) => Some(Arc::new(Keys {
                admin_sha256: token_hash(&load_or_create_token_file(&config.admin_token_file)?),
                admin_user: config.admin_user.clone(),
                cluster_sha256: token_hash(&load_or_create_token_file(&config.cluster_token_file)?),
            })),
        };
        Ok(Authenticator {
            state,
            keys,
            metrics,
        })
    }

    pub fn enabled(&self) -> bool {
        self.keys.is_some()
    }

    /// The identity of a request's token, counting refusals.
    pub fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Identity, Status> {
        let identity = self.identify(metadata);
        if identity.is_err() {
            self.refused("unauthenticated");
        }
        identity
    }

    fn refused(&self, reason: &str) {
        self.metrics
            .requests_refused
            .with_label_values(&[reason])
            .inc();
    }

    fn identify(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Identity, Status> {
        let Some(keys) = &self.keys else {
            return Ok(Identity::Open);
        };
        let header = metadata
            .get(borg_common::auth::AUTHORIZATION_HEADER)
            .ok_or_else(|| {
                Status::unauthenticated(
                    "no token: pass --token, set BORG_TOKEN or write your token to ~/.config/borg/token \
                     (a dev cell's admin token is DATA_DIR/admin.token)",
                )
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix(BEARER_PREFIX))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("the authorization metadata must be `Bearer TOKEN`")
            })?;
        let hash = token_hash(token);
        if hash == keys.cluster_sha256 {
            return Ok(Identity::ControlPlane);
        }
        if hash == keys.admin_sha256 {
            return Ok(Identity::User(crate::state::Caller {
                user: keys.admin_user.clone(),
                admin: true,
            }));
        }
        let state = self
            .state
            .read()
            .map_err(|_| Status::internal("cell state lock poisoned; restart this replica"))?;
        match state.token_user(&hash) {
            Some((user, admin)) => Ok(Identity::User(crate::state::Caller {
                user: user.to_owned(),
                admin,
            })),
            None => Err(Status::unauthenticated(
                "the token is not known to this cell: ask an admin for one (`borg token create USER`)",
            )),
        }
    }

    /// Interceptor of the users' service: any authenticated caller.
    pub fn any_caller(&self) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
        let auth = self.clone();
        move |mut request: Request<()>| {
            let identity = auth.authenticate(request.metadata())?;
            request.extensions_mut().insert(identity);
            Ok(request)
        }
    }

    /// Interceptor of the control plane's services: the cluster token only.
    pub fn control_plane_only(
        &self,
        service: &'static str,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
        let auth = self.clone();
        move |mut request: Request<()>| {
            let identity = auth.authenticate(request.metadata())?;
            match identity {
                Identity::Open | Identity::ControlPlane => {
                    request.extensions_mut().insert(identity);
                    Ok(request)
                }
                Identity::User(caller) => {
                    auth.refused("permission_denied");
                    Err(Status::permission_denied(format!(
                        "{service} is for the control plane only, and user {} holds a user token: \
                     start schedulers, link shards and borglets with --cluster-token-file",
                        caller.user
                    )))
                }
            }
        }
    }
}

/// The identity the interceptor attached to `request`.
pub fn identity<T>(request: &Request<T>) -> Result<Identity, Status> {
    request
        .extensions()
        .get::<Identity>()
        .cloned()
        .ok_or_else(|| {
            Status::internal(
                "request reached a handler unauthenticated; this is a bug in the master",
            )
        })
}

/// `command` as `identity` may propose it: wrapped with a user's identity (authorized and,
/// for submits, admitted in `apply`), as is when authentication is off, refused for the
/// cluster token (the control plane has no user to act as).
pub fn on_behalf_of(identity: &Identity, command: Command) -> Result<Command, Status> {
    match identity {
        Identity::Open => Ok(command),
        Identity::User(caller) => Ok(Command::AsUser {
            caller: caller.clone(),
            command: Box::new(command),
        }),
        Identity::ControlPlane => Err(Status::permission_denied(
            "the cluster token identifies the control plane, not a user: use a user token for this",
        )),
    }
}

/// Refuses a non-admin before anything is proposed (`apply` checks again).
pub fn require_admin(identity: &Identity, what: &str) -> Result<(), Status> {
    match identity {
        Identity::Open => Ok(()),
        Identity::User(caller) if caller.admin => Ok(()),
        Identity::User(caller) => Err(Status::permission_denied(format!(
            "only an admin may {what}; user {} is not one: ask an admin",
            caller.user
        ))),
        Identity::ControlPlane => Err(Status::permission_denied(format!(
            "only an admin may {what}; the cluster token is not an admin's"
        ))),
    }
}

/// The user name of a caller, for filling in a job's owner.
pub fn user_name(identity: &Identity) -> Option<&str> {
    match identity {
        Identity::User(caller) => Some(&caller.user),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Caller, LogEntry};
    use tonic::metadata::MetadataMap;

    fn bearer(token: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert(
            borg_common::auth::AUTHORIZATION_HEADER,
            format!("{BEARER_PREFIX}{token}").parse().unwrap(),
        );
        metadata
    }

    #[test]
    fn tokens_map_to_identities_and_anything_else_is_unauthenticated() {
        let dir = tempfile::tempdir().unwrap();
        let config = AuthConfig::in_dir(dir.path(), "root");
        let state = Arc::new(RwLock::new(CellState::new()));
        let metrics = AuthMetrics::register(&Registry::new()).unwrap();
        let auth = Authenticator::load(Some(&config), state.clone(), metrics).unwrap();
        let admin = load_or_create_token_file(&config.admin_token_file).unwrap();
        let cluster = load_or_create_token_file(&config.cluster_token_file).unwrap();

        let code = |m: &MetadataMap| auth.authenticate(m).unwrap_err().code();
        assert_eq!(code(&MetadataMap::new()), tonic::Code::Unauthenticated);
        assert_eq!(code(&bearer("unknown")), tonic::Code::Unauthenticated);
        let mut basic = MetadataMap::new();
        basic.insert("authorization", format!("Basic {admin}").parse().unwrap());
        assert_eq!(code(&basic), tonic::Code::Unauthenticated);
        assert_eq!(
            auth.authenticate(&bearer(&cluster)).unwrap(),
            Identity::ControlPlane
        );
        let root = Caller {
            user: "root".into(),
            admin: true,
        };
        assert_eq!(
            auth.authenticate(&bearer(&admin)).unwrap(),
            Identity::User(root)
        );

        // A token registered in the state is known from the next request on.
        let entry = LogEntry {
            request_id: "t".into(),
            time_ms: 1,
            command: Command::CreateToken {
                token_sha256: token_hash("bobs-token"),
                user: "bob".into(),
                admin: false,
            },
        };
        state.write().unwrap().apply(1, &entry);
        assert_eq!(
            auth.authenticate(&bearer("bobs-token")).unwrap(),
            Identity::User(Caller {
                user: "bob".into(),
                admin: false
            })
        );
        // Revoked, it is refused from the next request on.
        let revoke = LogEntry {
            request_id: "r".into(),
            time_ms: 2,
            command: Command::RevokeTokens {
                target: "bob".into(),
            },
        };
        state.write().unwrap().apply(2, &revoke);
        assert_eq!(code(&bearer("bobs-token")), tonic::Code::Unauthenticated);
        let refused = auth
            .metrics
            .requests_refused
            .with_label_values(&["unauthenticated"])
            .get();
        assert_eq!(refused, 4);
        // Without a configuration the replica is open.
        let open = Authenticator::load(
            None,
            state,
            AuthMetrics::register(&Registry::new()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            open.authenticate(&MetadataMap::new()).unwrap(),
            Identity::Open
        );
    }
}

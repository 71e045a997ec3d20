//! The borglet takes orders only from the control plane (docs/security.md): every
//! `BorgletService` call must carry the cluster token. Users reach their tasks through the
//! master's `TaskAccessService`, which authenticates them and calls here with that token.

use borg_common::auth::{token_hash, AUTHORIZATION_HEADER, BEARER_PREFIX};
use prometheus::IntCounter;
use std::sync::Arc;
use tonic::{Request, Status};

/// Interceptor of `BorgletService`: the cluster token, or nothing when none is configured.
#[derive(Clone)]
pub struct ControlPlaneOnly {
    /// Hex SHA-256 of the cluster token; None: every caller is trusted (no token configured).
    cluster_sha256: Option<Arc<str>>,
    refused: IntCounter,
}

impl ControlPlaneOnly {
    pub fn new(cluster_token: Option<&str>, refused: IntCounter) -> Self {
        ControlPlaneOnly {
            cluster_sha256: cluster_token.map(|t| Arc::from(token_hash(t))),
            refused,
        }
    }

    /// `Ok` for the cluster token (or any caller when none is configured).
    pub fn check(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let Some(expected) = &self.cluster_sha256 else {
            return Ok(());
        };
        let presented = metadata
            .get(AUTHORIZATION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix(BEARER_PREFIX))
            .map(str::trim);
        // Hashes are compared, so the comparison's timing says nothing about the token.
        if presented.is_some_and(|token| token_hash(token) == **expected) {
            return Ok(());
        }
        self.refused.inc();
        Err(Status::unauthenticated(
            "the borglet takes orders only from the control plane, with the cluster token; \
             users reach their tasks through the master (`borg logs`, `borg ssh`)",
        ))
    }
}

impl tonic::service::Interceptor for ControlPlaneOnly {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request.metadata())?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataMap;

    fn bearer(token: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert(
            AUTHORIZATION_HEADER,
            format!("{BEARER_PREFIX}{token}").parse().unwrap(),
        );
        metadata
    }

    #[test]
    fn only_the_cluster_token_passes_when_one_is_configured() {
        let refused = IntCounter::new("refused", "refused").unwrap();
        let check = ControlPlaneOnly::new(Some("cluster-secret"), refused.clone());
        assert!(check.check(&bearer("cluster-secret")).is_ok());
        for metadata in [MetadataMap::new(), bearer("a-user-token")] {
            let status = check.check(&metadata).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
        }
        assert_eq!(refused.get(), 2);
        let open = ControlPlaneOnly::new(None, refused);
        assert!(open.check(&MetadataMap::new()).is_ok());
    }
}

//! Bearer tokens: how every caller of the masters proves who it is (docs/security.md).
//!
//! A token is 32 random bytes in hex, sent as `authorization: Bearer TOKEN` on every call.
//! The masters keep only the SHA-256 of a token (hex), never the token itself. Token files
//! hold one token; the masters create the bootstrap admin and cluster token files when they
//! are missing, so `borg dev` works without any setup.

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Metadata key carrying the token.
pub const AUTHORIZATION_HEADER: &str = "authorization";
/// Scheme prefix of the header's value.
pub const BEARER_PREFIX: &str = "Bearer ";
/// Random bytes in a token (hex-encoded, so tokens are twice as many characters).
pub const TOKEN_BYTES: usize = 32;
/// Longest token accepted from a file (a token file is one line).
pub const TOKEN_MAX_LEN: usize = 512;
/// How long `load_or_create_token_file` waits for a file another process is creating.
const TOKEN_FILE_WAIT_MS: u64 = 5_000;
const TOKEN_FILE_POLL_MS: u64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create token file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token file {path} is empty or not one printable line of at most {TOKEN_MAX_LEN} characters: write one token into it, or delete it to have a new one created")]
    Malformed { path: PathBuf },
    #[error("cannot read random bytes for a new token: {source}")]
    Random { source: std::io::Error },
}

/// Hex SHA-256 of a token: what the masters store and compare.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// A new random token (64 hex characters) from the kernel's CSPRNG.
pub fn generate_token() -> Result<String, TokenFileError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| TokenFileError::Random { source })?;
    Ok(hex(&bytes))
}

/// Whether `token` can travel in a header and be written to a file as one line.
pub fn is_valid_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= TOKEN_MAX_LEN && token.bytes().all(|b| b.is_ascii_graphic())
}

/// The token in `path` (surrounding whitespace trimmed).
pub fn read_token_file(path: &Path) -> Result<String, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim();
    if !is_valid_token(token) {
        return Err(TokenFileError::Malformed {
            path: path.to_owned(),
        });
    }
    Ok(token.to_owned())
}

/// The token in `path`, creating the file (mode 0600, with a new random token) if it does
/// not exist. Several processes may race to create it (the replicas of `borg dev`): the file
/// is written under a temporary name and hard-linked into place, which fails if another won,
/// so every one of them ends up with the same token.
pub fn load_or_create_token_file(path: &Path) -> Result<String, TokenFileError> {
    match read_token_file(path) {
        Err(TokenFileError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound => {}
        other => return other,
    }
    let create = |source| TokenFileError::Create {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(create)?;
    }
    let token = generate_token()?;
    let temporary = path.with_extension(format!("tmp-{}-{}", std::process::id(), &token[..8]));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut f| {
            f.write_all(format!("{token}\n").as_bytes())?;
            f.sync_all()
        });
    if let Err(source) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(create(source));
    }
    let linked = std::fs::hard_link(&temporary, path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(token),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => wait_for_token_file(path),
        Err(source) => Err(create(source)),
    }
}

/// Another process linked the file into place complete, so it is readable at once; the
/// bounded retry only covers file systems that make the link visible before the content.
fn wait_for_token_file(path: &Path) -> Result<String, TokenFileError> {
    let attempts = TOKEN_FILE_WAIT_MS / TOKEN_FILE_POLL_MS;
    let mut last = read_token_file(path);
    for _ in 0..attempts {
        if last.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(TOKEN_FILE_POLL_MS));
        last = read_token_file(path);
    }
    last
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_hex_and_tokens_random() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let (a, b) = (generate_token().unwrap(), generate_token().unwrap());
        assert_eq!(a.len(), 2 * TOKEN_BYTES);
        assert_ne!(a, b);
        assert!(is_valid_token(&a));
        assert!(!is_valid_token("two words"));
        assert!(!is_valid_token(""));
    }

    #[test]
    fn a_token_file_is_created_once_and_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("admin.token");
        let first = load_or_create_token_file(&path).unwrap();
        let again = load_or_create_token_file(&path).unwrap();
        assert_eq!(first, again);
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        // Nothing but the token file is left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn racing_creators_agree_on_one_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.token");
        let tokens: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| load_or_create_token_file(&path).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(tokens.windows(2).all(|w| w[0] == w[1]), "{tokens:?}");
    }

    #[test]
    fn a_malformed_file_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.token");
        std::fs::write(&path, "  \n").unwrap();
        let error = load_or_create_token_file(&path).unwrap_err();
        assert!(error.to_string().contains("delete it"), "{error}");
    }
}

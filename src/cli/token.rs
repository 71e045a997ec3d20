//! `borg token ...`, and where the CLI finds its own token (docs/security.md).
//!
//! The CLI sends `--token` (or `BORG_TOKEN`); else the token in `--token-file` (or
//! `BORG_TOKEN_FILE`); else `~/.config/borg/token`; else the admin token of a dev cell in the
//! default data directory (`/var/tmp/borg-dev/admin.token`), so that `borg dev` works as is.

use super::render::{format_age, table};
use super::{master_client, GlobalArgs, OutputFormat};
use crate::cli::rpc::cell_client;
use anyhow::Context;
use borg_common::auth::{generate_token, read_token_file, token_hash};
use borg_common::new_request_id;
use borg_proto::v1;
use clap::Subcommand;
use std::path::{Path, PathBuf};

/// Admin token of a `borg dev` cell with the default `--data-dir`.
pub const DEV_ADMIN_TOKEN_FILE: &str = "/var/tmp/borg-dev/admin.token";
/// Names of the token files a dev cell (and `borg master` by convention) keeps in its data dir.
pub const ADMIN_TOKEN_FILE_NAME: &str = "admin.token";
pub const CLUSTER_TOKEN_FILE_NAME: &str = "cluster.token";

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for USER and print it (admins only). The cell keeps only its hash:
    /// store the printed token, it cannot be shown again.
    Create {
        user: String,
        /// The new token's user is an admin (may set quotas, create tokens, act on any job).
        #[arg(long)]
        admin: bool,
    },
    /// Show who the cell takes you for.
    Whoami,
    /// List the registered tokens: id, user, admin, age (admins only; no secrets).
    List {
        /// Only this user's tokens.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by its id (from `borg token list`), or every token of USER (admins
    /// only). Every master replica refuses a revoked token from then on.
    Revoke {
        /// A token id (12 or more hex digits) or a user name.
        #[arg(value_name = "USER|TOKEN-ID")]
        target: String,
    },
}

/// The token this CLI sends: the first of `flag`, `file`, `~/.config/borg/token`, the dev
/// cell's admin token.
pub fn resolve(flag: Option<&str>, file: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Some(token) = flag.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(Some(token.to_owned()));
    }
    if let Some(file) = file {
        return Ok(Some(read_token_file(file)?));
    }
    let mut defaults = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        defaults.push(PathBuf::from(home).join(".config/borg/token"));
    }
    defaults.push(PathBuf::from(DEV_ADMIN_TOKEN_FILE));
    for path in defaults {
        if path.exists() {
            return Ok(Some(read_token_file(&path)?));
        }
    }
    Ok(None)
}

pub async fn run(command: TokenCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let client = master_client(global)?;
    match command {
        TokenCommand::Create { user, admin } => {
            let token = generate_token()?;
            let request = v1::CreateTokenRequest {
                user: user.clone(),
                admin,
                token_sha256: token_hash(&token),
                request_id: new_request_id("token"),
            };
            let response = client
                .call(|channel| {
                    let request = request.clone();
                    async move {
                        cell_client(channel)
                            .create_token(request)
                            .await
                            .map(|r| r.into_inner())
                    }
                })
                .await
                .with_context(|| format!("creating a token for {user}"))?;
            match global.output {
                OutputFormat::Json => println!(
                    "{:#}",
                    serde_json::json!({
                        "user": response.user,
                        "admin": response.admin,
                        "token": token,
                        "id": response.id,
                        "index": response.index,
                    })
                ),
                OutputFormat::Text => {
                    println!("{token}");
                    eprintln!(
                        "token {} for {}user {user} created; give it to them (BORG_TOKEN or ~/.config/borg/token): it is not stored and cannot be shown again",
                        response.id,
                        if admin { "admin " } else { "" }
                    );
                }
            }
        }
        TokenCommand::Whoami => {
            let response = client
                .call(|channel| async move {
                    cell_client(channel)
                        .who_am_i(v1::WhoAmIRequest {})
                        .await
                        .map(|r| r.into_inner())
                })
                .await
                .context("asking the cell who you are")?;
            match global.output {
                OutputFormat::Json => println!(
                    "{:#}",
                    serde_json::json!({
                        "user": response.user,
                        "admin": response.admin,
                        "control_plane": response.control_plane,
                    })
                ),
                OutputFormat::Text if response.control_plane && response.admin => {
                    println!("anyone: this cell runs without authentication (--no-auth)")
                }
                OutputFormat::Text if response.control_plane => {
                    println!("the control plane (cluster token)")
                }
                OutputFormat::Text => println!(
                    "{}{}",
                    response.user,
                    if response.admin { " (admin)" } else { "" }
                ),
            }
        }
        TokenCommand::List { user } => {
            let request = v1::ListTokensRequest {
                user: user.unwrap_or_default(),
                consistent: true,
            };
            let response = client
                .call(|channel| {
                    let request = request.clone();
                    async move {
                        cell_client(channel)
                            .list_tokens(request)
                            .await
                            .map(|r| r.into_inner())
                    }
                })
                .await
                .context("listing tokens")?;
            match global.output {
                OutputFormat::Json => println!("{:#}", tokens_json(&response.tokens)),
                OutputFormat::Text => {
                    print!("{}", tokens_text(&response.tokens, borg_common::now_ms()))
                }
            }
        }
        TokenCommand::Revoke { target } => {
            let request = v1::RevokeTokenRequest {
                target: target.clone(),
                request_id: new_request_id("revoke"),
            };
            let response = client
                .call(|channel| {
                    let request = request.clone();
                    async move {
                        cell_client(channel)
                            .revoke_token(request)
                            .await
                            .map(|r| r.into_inner())
                    }
                })
                .await
                .with_context(|| format!("revoking {target}"))?;
            match global.output {
                OutputFormat::Json => println!(
                    "{:#}",
                    serde_json::json!({
                        "revoked": tokens_json(&response.revoked),
                        "index": response.index,
                    })
                ),
                OutputFormat::Text => {
                    for token in &response.revoked {
                        println!("revoked token {} of {}", token.id, token.user);
                    }
                }
            }
        }
    }
    Ok(())
}

fn tokens_json(tokens: &[v1::TokenInfo]) -> serde_json::Value {
    tokens
        .iter()
        .map(|t| {
            serde_json::json!({
                "id": t.id,
                "user": t.user,
                "admin": t.admin,
                "created_ms": t.created_ms,
                "created_index": t.created_index,
            })
        })
        .collect()
}

fn tokens_text(tokens: &[v1::TokenInfo], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.user.clone(),
                if t.admin { "yes" } else { "no" }.to_owned(),
                format_age(now_ms.saturating_sub(t.created_ms)),
            ]
        })
        .collect();
    let mut out = table(&["ID", "USER", "ADMIN", "AGE"], &rows);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_table_shows_ids_users_and_ages() {
        let tokens = [v1::TokenInfo {
            id: "0123456789ab".into(),
            user: "bob".into(),
            admin: false,
            created_index: 7,
            created_ms: 1_000,
        }];
        let text = tokens_text(&tokens, 61_000);
        assert!(text.starts_with("ID"), "{text}");
        assert!(text.contains("0123456789ab  bob"), "{text}");
        assert_eq!(tokens_json(&tokens)[0]["user"], "bob");
    }

    #[test]
    fn a_flag_wins_and_a_file_is_read() {
        assert_eq!(
            resolve(Some(" abc "), None).unwrap().as_deref(),
            Some("abc")
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "from-file\n").unwrap();
        assert_eq!(
            resolve(None, Some(&path)).unwrap().as_deref(),
            Some("from-file")
        );
        assert!(resolve(None, Some(&dir.path().join("missing"))).is_err());
    }
}

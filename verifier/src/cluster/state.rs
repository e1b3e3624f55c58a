//! The CA's durable state: join tokens (their verifiers, never their
//! secrets) and the nodes it has admitted. One JSON file under the state
//! directory, changed only under an exclusive lock on that directory and
//! replaced atomically (write, fsync, rename, fsync the directory), so the
//! CA service and `marque ca token …` on the same host can both change it
//! and a crash leaves the old or the new state, never half of one.

use std::fs::File;
use std::path::{Path, PathBuf};

use marque_keys::node::{Role, TokenVerifier};
use serde::{Deserialize, Serialize};

/// The state file's name.
const STATE_FILE: &str = "ca-state.json";
/// Largest state file read.
const MAX_STATE_BYTES: u64 = 64 << 20;

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Reading, writing or locking failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The state file is not what marque wrote.
    #[error("{path}: corrupt CA state: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A join token as the CA keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    /// The public token id.
    pub id: String,
    /// The Ed25519 verifier derived from the secret (hex).
    pub verifier: String,
    /// The role a node joining with it gets.
    pub role: String,
    /// The segment a node joining with it gets.
    pub segment: String,
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
    /// Joins left.
    pub uses_left: u32,
    /// Unix seconds it was made.
    pub created_at: u64,
    /// Revoked (kept for the audit trail).
    #[serde(default)]
    pub revoked: bool,
}

impl TokenRecord {
    /// The verifier, parsed.
    pub fn verifier(&self) -> Option<TokenVerifier> {
        TokenVerifier::from_hex(&self.verifier)
    }

    /// The role, parsed.
    pub fn role(&self) -> Option<Role> {
        self.role.parse().ok()
    }
}

/// A node the CA admitted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeRecord {
    /// Its CA-assigned id.
    pub id: String,
    /// Its role.
    pub role: String,
    /// Its segment.
    pub segment: String,
    /// The token it joined with.
    pub token: String,
    /// The serial of the certificate it authenticates with.
    pub current_serial: String,
    /// A serial just issued by a renewal and not used yet: accepted too,
    /// and becomes current on first use (then the old one is refused).
    #[serde(default)]
    pub new_serial: Option<String>,
    /// notAfter of its newest certificate (Unix seconds).
    pub not_after: u64,
    /// When it joined (Unix seconds).
    pub joined_at: u64,
    /// When it was removed (denylisted), if it was.
    #[serde(default)]
    pub removed_at: Option<u64>,
}

/// Everything the CA remembers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CaState {
    /// Format version (1).
    pub version: u32,
    /// Join tokens, newest last.
    pub tokens: Vec<TokenRecord>,
    /// Admitted nodes, newest last.
    pub nodes: Vec<NodeRecord>,
}

impl CaState {
    /// The token with `id`.
    pub fn token_mut(&mut self, id: &str) -> Option<&mut TokenRecord> {
        self.tokens.iter_mut().find(|t| t.id == id)
    }

    /// The node with `id`.
    pub fn node(&self, id: &str) -> Option<&NodeRecord> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The node with `id`, mutable.
    pub fn node_mut(&mut self, id: &str) -> Option<&mut NodeRecord> {
        self.nodes.iter_mut().find(|n| n.id == id)
    }

    /// Drops tokens that can no longer be used and have been expired for a
    /// day, and removed nodes whose last certificate expired, so the file
    /// does not grow for ever. A removed node stays denylisted for as long
    /// as any certificate of it could be valid.
    pub fn prune(&mut self, now: u64) {
        const DAY: u64 = 86_400;
        self.tokens
            .retain(|t| !(t.expires_at + DAY < now && (t.uses_left == 0 || t.revoked)));
        self.nodes
            .retain(|n| !(n.removed_at.is_some() && n.not_after < now));
    }
}

/// The state directory of a CA.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Opens (creating, mode 0700) the directory.
    pub fn open(path: &Path) -> Result<StateDir, StateError> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|source| StateError::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok(StateDir {
            path: path.to_owned(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, path: &Path) -> impl Fn(std::io::Error) -> StateError {
        let path = path.to_owned();
        move |source| StateError::Io {
            path: path.clone(),
            source,
        }
    }

    /// Reads the state (empty when there is none yet).
    pub fn read(&self) -> Result<CaState, StateError> {
        let path = self.path.join(STATE_FILE);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(CaState {
                    version: 1,
                    ..CaState::default()
                });
            }
            Err(e) => return Err(self.io(&path)(e)),
        };
        let mut bytes = Vec::new();
        use std::io::Read as _;
        file.take(MAX_STATE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(self.io(&path))?;
        if bytes.len() as u64 > MAX_STATE_BYTES {
            return Err(StateError::Corrupt {
                path,
                reason: format!("larger than {MAX_STATE_BYTES} bytes"),
            });
        }
        let state: CaState = serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if state.version != 1 {
            return Err(StateError::Corrupt {
                path,
                reason: format!("unknown version {}", state.version),
            });
        }
        Ok(state)
    }

    /// Runs `change` on the state under the directory's exclusive lock and
    /// writes the result atomically (fsynced) before the lock is released.
    /// `change` returns a value for the caller; the state is written even
    /// when that value is an error (a consumed token use must stick).
    pub fn update<T>(&self, change: impl FnOnce(&mut CaState) -> T) -> Result<T, StateError> {
        let dir = File::open(&self.path).map_err(self.io(&self.path))?;
        dir.lock().map_err(self.io(&self.path))?;
        let result = (|| {
            let mut state = self.read()?;
            let before = state.clone();
            let out = change(&mut state);
            if state != before {
                let path = self.path.join(STATE_FILE);
                let bytes = serde_json::to_vec_pretty(&state).map_err(|e| StateError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                crate::registry::layout::write_atomically(&self.path, &path, &bytes)
                    .map_err(self.io(&path))?;
            }
            Ok(out)
        })();
        let _ = dir.unlock();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_persist_and_corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(dir.path()).unwrap();
        assert!(s.read().unwrap().tokens.is_empty());
        s.update(|st| {
            st.tokens.push(TokenRecord {
                id: "abcdefgh".into(),
                verifier: "00".repeat(32),
                role: "worker".into(),
                segment: "edge".into(),
                expires_at: 10,
                uses_left: 1,
                created_at: 1,
                revoked: false,
            })
        })
        .unwrap();
        let again = StateDir::open(dir.path()).unwrap().read().unwrap();
        assert_eq!(again.tokens.len(), 1);
        assert_eq!(again.tokens[0].role(), Some(Role::Worker));
        // Pruned a day after expiry once used up.
        s.update(|st| {
            st.tokens[0].uses_left = 0;
            st.prune(10 + 86_401);
        })
        .unwrap();
        assert!(s.read().unwrap().tokens.is_empty());
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        assert!(matches!(s.read(), Err(StateError::Corrupt { .. })));
    }
}

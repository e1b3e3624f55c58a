//! Policy TOML: `Policy::parse_with` never panics, and a policy that loads
//! keeps what it says (every scope not in skip mode has an authority).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use marque_verifier::policy::{Mode, Policy};

fn files(path: &Path) -> std::io::Result<Vec<u8>> {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static ROOT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    match path.file_name().and_then(|n| n.to_str()) {
        Some(n) if n.ends_with(".pub") => Ok(KEY
            .get_or_init(|| {
                marque_keys::SigningKey::generate(marque_keys::Algorithm::EcdsaP256Sha256)
                    .expect("key")
                    .public_key()
                    .to_pem()
            })
            .clone()
            .into_bytes()),
        Some(n) if n.ends_with(".pem") => Ok(ROOT
            .get_or_init(|| {
                marque_keys::certificate::new_root(
                    "fuzz root",
                    std::time::SystemTime::now(),
                    std::time::Duration::from_secs(3600),
                    0,
                )
                .expect("root")
                .cert_pem
            })
            .clone()
            .into_bytes()),
        _ => Err(std::io::ErrorKind::NotFound.into()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policy) = Policy::parse_with(Path::new("/fuzz/policy.toml"), text, &files) {
        for scope in policy.scopes() {
            assert!(scope.mode == Mode::Skip || !scope.authorities.is_empty());
        }
    }
});

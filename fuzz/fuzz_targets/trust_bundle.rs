//! Trust bundles: the envelope check (`trust::verify_signatures`) and the
//! bundle's own policy (`Bundle::policy`) never panic, and the envelope
//! check does bounded work whatever the signatures.
#![no_main]

use libfuzzer_sys::fuzz_target;
use marque_verifier::trust::{self, Bundle, Signers};

fuzz_target!(|data: &[u8]| {
    static SIGNERS: std::sync::OnceLock<Signers> = std::sync::OnceLock::new();
    let signers = SIGNERS.get_or_init(|| Signers {
        keys: (0..2)
            .map(|i| {
                let algorithm = if i == 0 {
                    marque_keys::Algorithm::EcdsaP256Sha256
                } else {
                    marque_keys::Algorithm::Ed25519
                };
                marque_keys::SigningKey::generate(algorithm)
                    .expect("key")
                    .public_key()
                    .to_pem()
            })
            .collect(),
        threshold: 1,
    });
    let _ = trust::verify_signatures(data, signers);
    if let Ok(bundle) = serde_json::from_slice::<Bundle>(data) {
        let _ = bundle.policy();
    }
});

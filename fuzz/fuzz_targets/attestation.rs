//! Attestation envelopes as a policy checks them (`attest::check_envelope`:
//! DSSE, statement, subjects, predicate type) never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use marque_verifier::Digest;
use marque_verifier::attest::{AttestationRequirements, check_envelope};
use marque_verifier::budget::Budget;

fuzz_target!(|data: &[u8]| {
    static REQ: std::sync::OnceLock<AttestationRequirements> = std::sync::OnceLock::new();
    let req = REQ.get_or_init(|| AttestationRequirements {
        keys: vec![
            marque_keys::SigningKey::generate(marque_keys::Algorithm::EcdsaP256Sha256)
                .expect("key")
                .public_key()
                .clone(),
        ],
        predicate_type: "https://slsa.dev/provenance/v1".to_owned(),
        max_envelope_bytes: 17 << 20,
        max_layers: 1000,
        certificates: None,
        now: std::time::SystemTime::now(),
    });
    let digest = Digest::of(b"image manifest");
    let _ = check_envelope(
        data,
        None,
        &digest,
        req,
        &Budget::default_for_one_decision(),
    );
});

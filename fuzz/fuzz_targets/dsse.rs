//! DSSE envelopes: parse, open (payload type, signature cap, PAE) and the
//! signature checks never panic, and never spend past their budget.
#![no_main]

use libfuzzer_sys::fuzz_target;
use marque_verifier::artifact::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use marque_verifier::budget::Budget;

fuzz_target!(|data: &[u8]| {
    static KEYS: std::sync::OnceLock<Vec<marque_keys::PublicKey>> = std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        [
            marque_keys::Algorithm::EcdsaP256Sha256,
            marque_keys::Algorithm::EcdsaP384Sha384,
            marque_keys::Algorithm::Ed25519,
        ]
        .into_iter()
        .map(|a| {
            marque_keys::SigningKey::generate(a)
                .expect("key")
                .public_key()
                .clone()
        })
        .collect()
    });
    let Ok(envelope) = Envelope::parse(data) else {
        return;
    };
    let budget = Budget::default_for_one_decision();
    if let Ok(opened) = envelope.open(IN_TOTO_PAYLOAD_TYPE, &budget) {
        let _ = opened.signers(keys, &budget);
        let _ = opened.first_signer(keys, &budget);
    }
    // The charge that stopped the checks may pass the limit; nothing after.
    assert!(budget.spent() <= marque_verifier::budget::DEFAULT_MAX_WORK + (64 << 20));
});

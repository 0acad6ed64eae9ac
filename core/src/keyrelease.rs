//! Key release bound to a measurement: how a service in a trusted execution
//! environment obtains its master key from a key broker only when the
//! platform attests that it runs the expected code.
//!
//! The flow (RATS "background check"): the broker hands out a fresh
//! challenge; the service makes an ephemeral X25519 key pair and asks its
//! platform ([`Attester`]) for evidence whose report data is
//! SHA-256(challenge ‖ public key); the broker checks the evidence with an
//! [`EvidenceVerifier`] (the platform's signature chain), that the report
//! data binds this challenge and this public key, and that the measurement
//! is on its allow-list; only then does it encrypt the key to the service's
//! X25519 key (ECDH, HKDF-SHA-256, AES-256-GCM). Replaying old evidence
//! fails on the challenge, and evidence lifted from another process fails on
//! the public key, whose private half never left that process.
//!
//! Hardware attesters (AMD SEV-SNP, Intel TDX) and a network broker plug in
//! behind the traits; [`SoftwareAttester`] stands in for the platform in
//! tests and on hosts without one (it proves nothing about the host, only
//! that the flow holds).

use std::collections::BTreeSet;
use std::sync::Mutex;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair};

/// Why a key was not released.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyReleaseError {
    #[error("the platform's evidence does not verify: {0}")]
    BadEvidence(String),
    #[error(
        "the evidence answers another challenge or key (report data mismatch): a replay or a relay"
    )]
    WrongBinding,
    #[error("the challenge is unknown or was used already; ask for a new one")]
    StaleChallenge,
    #[error("measurement {0} is not on the broker's allow-list; this build may not have the key")]
    NotAllowed(String),
    #[error("the wrapped key does not open: it was altered or meant for another key pair")]
    Unwrap,
    #[error("the platform cannot attest: {0}")]
    Platform(String),
}

/// What a platform signs: the measurement of the code it launched and 32
/// bytes the caller chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The platform's kind (`software`, `sev-snp`, `tdx`).
    pub platform: String,
    /// The launch measurement, hex.
    pub measurement: String,
    pub report_data: [u8; 32],
    /// The platform's signature over the other fields.
    pub signature: Vec<u8>,
}

impl Evidence {
    /// The bytes a platform signature covers.
    pub fn signed_bytes(platform: &str, measurement: &str, report_data: &[u8; 32]) -> Vec<u8> {
        let mut bytes = format!("unseen evidence v1\n{platform}\n{measurement}\n").into_bytes();
        bytes.extend_from_slice(report_data);
        bytes
    }
}

/// The platform the service runs on.
pub trait Attester: Send + Sync {
    /// Evidence of this platform's measurement over `report_data`.
    fn report(&self, report_data: &[u8; 32]) -> Result<Evidence, KeyReleaseError>;
}

/// Checks a platform's signature chain over evidence.
pub trait EvidenceVerifier: Send + Sync {
    fn verify(&self, evidence: &Evidence) -> Result<(), KeyReleaseError>;
}

/// A software stand-in for a platform: an Ed25519 key plays the hardware
/// root of trust and the measurement is what it is told.
pub struct SoftwareAttester {
    key: Ed25519KeyPair,
    measurement: String,
}

impl std::fmt::Debug for SoftwareAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareAttester")
            .field("measurement", &self.measurement)
            .finish_non_exhaustive()
    }
}

impl SoftwareAttester {
    /// A new platform key reporting `measurement` (for example the running
    /// build's `binary_sha256`).
    pub fn new(measurement: &str) -> Result<SoftwareAttester, KeyReleaseError> {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| KeyReleaseError::Platform("cannot make a platform key".into()))?;
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|_| KeyReleaseError::Platform("cannot read the platform key".into()))?;
        Ok(SoftwareAttester {
            key,
            measurement: measurement.to_string(),
        })
    }

    /// The verifier a broker trusts for this platform.
    pub fn verifier(&self) -> SoftwareVerifier {
        SoftwareVerifier {
            public_key: self.key.public_key().as_ref().to_vec(),
        }
    }
}

impl Attester for SoftwareAttester {
    fn report(&self, report_data: &[u8; 32]) -> Result<Evidence, KeyReleaseError> {
        let signature = self.key.sign(&Evidence::signed_bytes(
            "software",
            &self.measurement,
            report_data,
        ));
        Ok(Evidence {
            platform: "software".into(),
            measurement: self.measurement.clone(),
            report_data: *report_data,
            signature: signature.as_ref().to_vec(),
        })
    }
}

/// Verifies [`SoftwareAttester`] evidence with its public key.
#[derive(Debug, Clone)]
pub struct SoftwareVerifier {
    public_key: Vec<u8>,
}

impl EvidenceVerifier for SoftwareVerifier {
    fn verify(&self, evidence: &Evidence) -> Result<(), KeyReleaseError> {
        if evidence.platform != "software" {
            return Err(KeyReleaseError::BadEvidence(format!(
                "platform `{}` is not the software platform this verifier trusts",
                evidence.platform
            )));
        }
        let message = Evidence::signed_bytes(
            &evidence.platform,
            &evidence.measurement,
            &evidence.report_data,
        );
        ring::signature::UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(&message, &evidence.signature)
            .map_err(|_| KeyReleaseError::BadEvidence("the platform signature is wrong".into()))
    }
}

/// What the service sends the broker.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    pub challenge: [u8; 32],
    pub evidence: Evidence,
    /// The service's ephemeral X25519 public key.
    pub public_key: Vec<u8>,
}

/// A key encrypted to one request's X25519 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The broker's ephemeral X25519 public key.
    pub broker_public_key: Vec<u8>,
    /// `nonce ‖ ciphertext ‖ tag`.
    pub sealed: Vec<u8>,
}

/// SHA-256(challenge ‖ public key): what the evidence must carry.
pub fn binding(challenge: &[u8; 32], public_key: &[u8]) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"unseen key release v1\n");
    context.update(challenge);
    context.update(public_key);
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// Releases one secret to evidence of an allowed measurement.
pub struct KeyBroker {
    verifier: Box<dyn EvidenceVerifier>,
    allowed: BTreeSet<String>,
    secret: [u8; 32],
    /// Challenges handed out and not used yet (each works once).
    open: Mutex<BTreeSet<[u8; 32]>>,
    rng: SystemRandom,
}

impl std::fmt::Debug for KeyBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyBroker")
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl KeyBroker {
    pub fn new(
        verifier: Box<dyn EvidenceVerifier>,
        allowed: impl IntoIterator<Item = String>,
        secret: [u8; 32],
    ) -> KeyBroker {
        KeyBroker {
            verifier,
            allowed: allowed.into_iter().collect(),
            secret,
            open: Mutex::new(BTreeSet::new()),
            rng: SystemRandom::new(),
        }
    }

    /// A fresh challenge, valid for one request.
    pub fn challenge(&self) -> Result<[u8; 32], KeyReleaseError> {
        let mut challenge = [0u8; 32];
        self.rng
            .fill(&mut challenge)
            .map_err(|_| KeyReleaseError::Platform("no randomness".into()))?;
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(challenge);
        Ok(challenge)
    }

    /// The secret, encrypted to the request's key, if its evidence verifies,
    /// binds this challenge and key, and names an allowed measurement.
    pub fn release(&self, request: &KeyRequest) -> Result<WrappedKey, KeyReleaseError> {
        // Used up whatever happens next: a failed attempt cannot be retried
        // with the same challenge.
        if !self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&request.challenge)
        {
            return Err(KeyReleaseError::StaleChallenge);
        }
        self.verifier.verify(&request.evidence)?;
        if request.evidence.report_data != binding(&request.challenge, &request.public_key) {
            return Err(KeyReleaseError::WrongBinding);
        }
        if !self.allowed.contains(&request.evidence.measurement) {
            return Err(KeyReleaseError::NotAllowed(
                request.evidence.measurement.clone(),
            ));
        }
        let (private, broker_public_key) = ephemeral_key(&self.rng)?;
        let key = shared_key(private, &request.public_key, &request.challenge)?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| KeyReleaseError::Platform("no randomness".into()))?;
        let mut sealed = self.secret.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&request.challenge),
            &mut sealed,
        )
        .map_err(|_| KeyReleaseError::Unwrap)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(WrappedKey {
            broker_public_key,
            sealed: out,
        })
    }
}

/// A fresh X25519 key pair: the private half and the public key's bytes.
fn ephemeral_key(rng: &SystemRandom) -> Result<(EphemeralPrivateKey, Vec<u8>), KeyReleaseError> {
    let failed = |_| KeyReleaseError::Platform("cannot make a key pair".into());
    let private = EphemeralPrivateKey::generate(&X25519, rng).map_err(failed)?;
    let public_key = private
        .compute_public_key()
        .map_err(failed)?
        .as_ref()
        .to_vec();
    Ok((private, public_key))
}

/// The AES-256-GCM key both sides derive from the X25519 agreement.
fn shared_key(
    private: EphemeralPrivateKey,
    peer: &[u8],
    challenge: &[u8; 32],
) -> Result<LessSafeKey, KeyReleaseError> {
    agreement::agree_ephemeral(private, &UnparsedPublicKey::new(&X25519, peer), |shared| {
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, challenge);
        let prk = salt.extract(shared);
        let info: [&[u8]; 1] = [b"unseen key release v1"];
        let okm = prk
            .expand(&info, &AES_256_GCM)
            .map_err(|_| KeyReleaseError::Unwrap)?;
        let unbound: UnboundKey = okm.into();
        Ok(LessSafeKey::new(unbound))
    })
    .map_err(|_| KeyReleaseError::Unwrap)?
}

/// The broker as the service reaches it (in process here; over the network
/// in a deployment).
pub trait Broker {
    fn challenge(&self) -> Result<[u8; 32], KeyReleaseError>;
    fn release(&self, request: &KeyRequest) -> Result<WrappedKey, KeyReleaseError>;
}

impl Broker for KeyBroker {
    fn challenge(&self) -> Result<[u8; 32], KeyReleaseError> {
        KeyBroker::challenge(self)
    }
    fn release(&self, request: &KeyRequest) -> Result<WrappedKey, KeyReleaseError> {
        KeyBroker::release(self, request)
    }
}

/// The service's side: attest over a fresh key pair and the broker's
/// challenge, and open what the broker returns.
pub fn obtain_key(
    attester: &dyn Attester,
    broker: &dyn Broker,
) -> Result<[u8; 32], KeyReleaseError> {
    let (private, public_key) = ephemeral_key(&SystemRandom::new())?;
    let challenge = broker.challenge()?;
    let evidence = attester.report(&binding(&challenge, &public_key))?;
    let wrapped = broker.release(&KeyRequest {
        challenge,
        evidence,
        public_key,
    })?;
    open_wrapped(private, &wrapped, &challenge)
}

fn open_wrapped(
    private: EphemeralPrivateKey,
    wrapped: &WrappedKey,
    challenge: &[u8; 32],
) -> Result<[u8; 32], KeyReleaseError> {
    let key = shared_key(private, &wrapped.broker_public_key, challenge)?;
    if wrapped.sealed.len() < NONCE_LEN {
        return Err(KeyReleaseError::Unwrap);
    }
    let (nonce, sealed) = wrapped.sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyReleaseError::Unwrap)?;
    let mut buffer = sealed.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(challenge), &mut buffer)
        .map_err(|_| KeyReleaseError::Unwrap)?;
    plain.try_into().map_err(|_| KeyReleaseError::Unwrap)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 32] = [7; 32];

    fn broker_for(attester: &SoftwareAttester, allowed: &str) -> KeyBroker {
        KeyBroker::new(Box::new(attester.verifier()), [allowed.to_string()], SECRET)
    }

    #[test]
    fn an_allowed_measurement_obtains_the_key() {
        let platform = SoftwareAttester::new("aa11").unwrap();
        let broker = broker_for(&platform, "aa11");
        assert_eq!(obtain_key(&platform, &broker), Ok(SECRET));
    }

    #[test]
    fn another_build_gets_nothing() {
        let platform = SoftwareAttester::new("bb22").unwrap();
        let broker = broker_for(&platform, "aa11");
        assert_eq!(
            obtain_key(&platform, &broker),
            Err(KeyReleaseError::NotAllowed("bb22".into()))
        );
    }

    #[test]
    fn evidence_from_an_untrusted_platform_is_refused() {
        let trusted = SoftwareAttester::new("aa11").unwrap();
        let impostor = SoftwareAttester::new("aa11").unwrap();
        let broker = broker_for(&trusted, "aa11");
        assert!(matches!(
            obtain_key(&impostor, &broker),
            Err(KeyReleaseError::BadEvidence(_))
        ));
    }

    /// A captured request replayed, and captured evidence relayed with the
    /// attacker's own key pair: neither yields the key.
    #[test]
    fn replayed_or_relayed_evidence_gets_nothing() {
        let platform = SoftwareAttester::new("aa11").unwrap();
        let broker = broker_for(&platform, "aa11");
        let rng = SystemRandom::new();
        let (private, public_key) = ephemeral_key(&rng).unwrap();
        let challenge = broker.challenge().unwrap();
        let request = KeyRequest {
            challenge,
            evidence: platform.report(&binding(&challenge, &public_key)).unwrap(),
            public_key,
        };
        let wrapped = broker.release(&request).unwrap();
        assert_eq!(open_wrapped(private, &wrapped, &challenge), Ok(SECRET));
        // Replay: the challenge is used up.
        assert_eq!(
            broker.release(&request),
            Err(KeyReleaseError::StaleChallenge)
        );
        // Relay: the genuine evidence with the attacker's key on a new challenge.
        let (_attacker, attacker_public_key) = ephemeral_key(&rng).unwrap();
        let fresh = broker.challenge().unwrap();
        let relayed = KeyRequest {
            challenge: fresh,
            evidence: request.evidence.clone(),
            public_key: attacker_public_key,
        };
        assert_eq!(broker.release(&relayed), Err(KeyReleaseError::WrongBinding));
    }

    #[test]
    fn an_altered_wrapped_key_does_not_open() {
        let platform = SoftwareAttester::new("aa11").unwrap();
        let broker = broker_for(&platform, "aa11");
        let (private, public_key) = ephemeral_key(&SystemRandom::new()).unwrap();
        let challenge = broker.challenge().unwrap();
        let mut wrapped = broker
            .release(&KeyRequest {
                challenge,
                evidence: platform.report(&binding(&challenge, &public_key)).unwrap(),
                public_key,
            })
            .unwrap();
        let last = wrapped.sealed.len() - 1;
        wrapped.sealed[last] ^= 1;
        assert_eq!(
            open_wrapped(private, &wrapped, &challenge),
            Err(KeyReleaseError::Unwrap)
        );
    }
}

//! Asymmetric signing keys given as private JSON Web Keys (RFC 7517, 7518):
//! checking them, the public key set published for verifiers, signing tokens
//! with the one key marked `sign`, and making new ES256 keys.
//!
//! Accepted: EC P-256 keys (ES256) and RSA keys of 2048 to 4096 bits (RS256),
//! each with a `kid`. `key_ops` may hold `sign` and `verify`; a key without
//! `sign` only verifies (a key being introduced or retired). jsonwebtoken signs
//! from DER, so each key is re-encoded (EC as PKCS#8, RSA as PKCS#1) and
//! checked with ring when loaded, so a private part that does not match its
//! public part is refused at start rather than at the first sign-in.
//!
//! Error messages name keys by `kid` and never include key material.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// Bytes of a P-256 coordinate or private scalar.
const P256_LEN: usize = 32;

/// One asymmetric key: its public half and, for signing, its DER form.
#[derive(Clone)]
pub struct PrivateKey {
    kid: String,
    alg: Algorithm,
    sign: bool,
    public: Value,
    encoding: Arc<EncodingKey>,
}

impl PrivateKey {
    /// The key id, written as `kid` in the headers of the tokens it signs.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `ES256` or `RS256`.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// True when `key_ops` holds `sign`.
    pub fn signs(&self) -> bool {
        self.sign
    }

    /// The public JWK: `kty`, `kid`, `alg`, `key_ops: ["verify"]` and the
    /// public parameters only.
    pub fn public_jwk(&self) -> &Value {
        &self.public
    }

    /// A JWT of `claims` with header `{"alg", "typ": "JWT", "kid"}`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }
}

impl fmt::Debug for PrivateKey {
    // Never the key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("sign", &self.sign)
            .finish_non_exhaustive()
    }
}

/// The configured keys: at most one signs, all verify.
#[derive(Debug, Clone, Default)]
pub struct PrivateKeySet {
    keys: Vec<PrivateKey>,
}

impl PrivateKeySet {
    /// Parses a JSON array of private JWKs (a `{"keys": [...]}` set is
    /// accepted too) and checks every key. An empty array is an empty set.
    pub fn parse(json: &str) -> Result<Self, String> {
        let doc: Value = serde_json::from_str(json)
            .map_err(|e| format!("not valid JSON (line {}, column {})", e.line(), e.column()))?;
        let entries = match doc {
            Value::Array(list) => list,
            Value::Object(mut set) => match set.remove("keys") {
                Some(Value::Array(list)) => list,
                _ if set.contains_key("kty") => {
                    return Err("expected a JSON array of JWKs; put a single key in [ ]".into());
                }
                _ => return Err("expected a JSON array of JWKs".into()),
            },
            _ => return Err("expected a JSON array of JWKs".into()),
        };
        let mut keys: Vec<PrivateKey> = Vec::with_capacity(entries.len());
        let mut kids = HashSet::new();
        for (index, entry) in entries.iter().enumerate() {
            let key = parse_key(index, entry)?;
            if !kids.insert(key.kid.clone()) {
                return Err(format!("two keys have kid {:?}", key.kid));
            }
            keys.push(key);
        }
        let signers: Vec<&str> = keys.iter().filter(|k| k.sign).map(|k| k.kid()).collect();
        if let [first, second, ..] = signers.as_slice() {
            return Err(format!(
                "keys {first:?} and {second:?} both have \"sign\" in key_ops; \
                 exactly one key may sign (give the others [\"verify\"])"
            ));
        }
        Ok(Self { keys })
    }

    /// The key that signs new tokens, if any.
    pub fn signer(&self) -> Option<&PrivateKey> {
        self.keys.iter().find(|k| k.sign)
    }

    /// Every key, in configuration order.
    pub fn keys(&self) -> &[PrivateKey] {
        &self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The public JSON Web Key Set, `{"keys": [...]}`, signing key first.
    pub fn public_jwks(&self) -> Value {
        let signing = self.keys.iter().filter(|k| k.sign);
        let others = self.keys.iter().filter(|k| !k.sign);
        let keys: Vec<Value> = signing.chain(others).map(|k| k.public.clone()).collect();
        json!({ "keys": keys })
    }
}

fn parse_key(index: usize, entry: &Value) -> Result<PrivateKey, String> {
    let obj = entry
        .as_object()
        .ok_or_else(|| format!("entry {index} is not a JSON object"))?;
    let kid = match obj.get("kid") {
        Some(Value::String(k)) if !k.trim().is_empty() => k.clone(),
        Some(_) => return Err(format!("entry {index}: kid must be a non-empty string")),
        None => return Err(format!("entry {index} has no kid")),
    };
    let fail = |reason: String| format!("key {kid:?}: {reason}");
    let kty = text(obj, "kty")
        .map_err(fail)?
        .ok_or_else(|| fail("has no kty".into()))?;
    if let Some(usage) = text(obj, "use").map_err(fail)?
        && usage != "sig"
    {
        return Err(fail(format!("use is {usage:?}, expected \"sig\"")));
    }
    let sign = match obj.get("key_ops") {
        None => false,
        Some(Value::Array(ops)) => {
            let mut sign = false;
            for op in ops {
                match op.as_str() {
                    Some("sign") => sign = true,
                    Some("verify") => {}
                    _ => {
                        return Err(fail(format!(
                            "key_ops may hold only \"sign\" and \"verify\", found {op}"
                        )));
                    }
                }
            }
            sign
        }
        Some(_) => return Err(fail("key_ops must be an array".into())),
    };
    let alg = text(obj, "alg").map_err(fail)?;
    let (alg, public, der) = match kty {
        "EC" => {
            if let Some(a) = alg.filter(|a| *a != "ES256") {
                return Err(fail(format!("alg {a:?} does not fit an EC key; use ES256")));
            }
            let (public, der) = ec_key(obj).map_err(fail)?;
            (Algorithm::ES256, public, der)
        }
        "RSA" => {
            if let Some(a) = alg.filter(|a| *a != "RS256") {
                return Err(fail(format!("alg {a:?} is not supported; use RS256")));
            }
            let (public, der) = rsa_key(obj).map_err(fail)?;
            (Algorithm::RS256, public, der)
        }
        "oct" => {
            return Err(fail(
                "symmetric (oct) keys are not accepted here; HS256 tokens use the project JWT secret"
                    .into(),
            ));
        }
        other => {
            return Err(fail(format!(
                "key type {other:?} is not supported; use EC (P-256, ES256) or RSA (RS256)"
            )));
        }
    };
    let mut public_jwk = Map::new();
    public_jwk.insert("kty".into(), json!(kty));
    public_jwk.insert("kid".into(), json!(kid));
    public_jwk.insert("alg".into(), json!(format!("{alg:?}")));
    public_jwk.insert("key_ops".into(), json!(["verify"]));
    public_jwk.extend(public);
    let encoding = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_der(&der),
        _ => EncodingKey::from_rsa_der(&der),
    };
    Ok(PrivateKey {
        kid,
        alg,
        sign,
        public: Value::Object(public_jwk),
        encoding: Arc::new(encoding),
    })
}

/// A string member, `None` when absent.
fn text<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

/// A base64url member that must be present (`private` names what it is for).
fn bytes(obj: &Map<String, Value>, name: &str, private: bool) -> Result<Vec<u8>, String> {
    let raw = text(obj, name)?.ok_or_else(|| {
        if private {
            format!("has no {name}: a private key is needed to sign")
        } else {
            format!("has no {name}")
        }
    })?;
    URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .map_err(|_| format!("{name} is not base64url"))
}

/// The public members and PKCS#8 DER of an EC P-256 key.
fn ec_key(obj: &Map<String, Value>) -> Result<(Map<String, Value>, Vec<u8>), String> {
    match text(obj, "crv")? {
        Some("P-256") => {}
        Some(other) => return Err(format!("curve {other:?} is not supported; use P-256")),
        None => return Err("has no crv".into()),
    }
    let x = bytes(obj, "x", false)?;
    let y = bytes(obj, "y", false)?;
    let d = bytes(obj, "d", true)?;
    for (name, value) in [("x", &x), ("y", &y), ("d", &d)] {
        if value.len() != P256_LEN {
            return Err(format!("{name} must be {P256_LEN} bytes for P-256"));
        }
    }
    let mut point = Vec::with_capacity(1 + 2 * P256_LEN);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let der = der::ec_p256_pkcs8(&d, &point);
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
        .map_err(|e| format!("not a usable P-256 key pair ({e}): d does not match x and y?"))?;
    let mut public = Map::new();
    public.insert("crv".into(), json!("P-256"));
    public.insert("x".into(), json!(URL_SAFE_NO_PAD.encode(&x)));
    public.insert("y".into(), json!(URL_SAFE_NO_PAD.encode(&y)));
    Ok((public, der))
}

/// The public members and PKCS#1 DER of an RSA key.
fn rsa_key(obj: &Map<String, Value>) -> Result<(Map<String, Value>, Vec<u8>), String> {
    let n = bytes(obj, "n", false)?;
    let e = bytes(obj, "e", false)?;
    let mut parts = vec![n.clone(), e.clone()];
    for name in ["d", "p", "q", "dp", "dq", "qi"] {
        parts.push(bytes(obj, name, true)?);
    }
    if obj.contains_key("oth") {
        return Err("keys with more than two primes (oth) are not supported".into());
    }
    let der = der::rsa_private_key(&parts);
    RsaKeyPair::from_der(&der).map_err(|e| {
        format!("not a usable RSA key pair ({e}); RS256 keys need 2048 to 4096 bits and e = 65537")
    })?;
    let mut public = Map::new();
    public.insert("n".into(), json!(URL_SAFE_NO_PAD.encode(der::unsigned(&n))));
    public.insert("e".into(), json!(URL_SAFE_NO_PAD.encode(der::unsigned(&e))));
    Ok((public, der))
}

/// A new EC P-256 private JWK with a random `kid` (a UUID): `key_ops` is
/// `["sign", "verify"]` when `sign`, else `["verify"]`.
pub fn generate_es256(sign: bool) -> Result<Value, String> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| "generating a P-256 key failed".to_owned())?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|e| format!("reading the new P-256 key failed: {e}"))?;
    let point = pair.public_key().as_ref();
    if point.len() != 1 + 2 * P256_LEN || point[0] != 0x04 {
        return Err("unexpected P-256 public key encoding".into());
    }
    let d = der::ec_private_scalar(pkcs8.as_ref())
        .ok_or("unexpected PKCS#8 layout of the new P-256 key")?;
    let ops = if sign {
        json!(["sign", "verify"])
    } else {
        json!(["verify"])
    };
    Ok(json!({
        "kty": "EC",
        "crv": "P-256",
        "kid": uuid::Uuid::new_v4().to_string(),
        "alg": "ES256",
        "key_ops": ops,
        "x": URL_SAFE_NO_PAD.encode(&point[1..=P256_LEN]),
        "y": URL_SAFE_NO_PAD.encode(&point[1 + P256_LEN..]),
        "d": URL_SAFE_NO_PAD.encode(d),
    }))
}

/// Just enough DER to wrap raw key parameters the way ring reads them.
mod der {
    const INTEGER: u8 = 0x02;
    const BIT_STRING: u8 = 0x03;
    const OCTET_STRING: u8 = 0x04;
    const SEQUENCE: u8 = 0x30;
    const CONTEXT_1: u8 = 0xa1;
    /// AlgorithmIdentifier contents: id-ecPublicKey (1.2.840.10045.2.1),
    /// prime256v1 (1.2.840.10045.3.1.7).
    const EC_P256_ALGORITHM: &[u8] = &[
        0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
        0x3d, 0x03, 0x01, 0x07,
    ];

    fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = value.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(value);
        out
    }

    /// A big-endian unsigned number without leading zero bytes.
    pub fn unsigned(value: &[u8]) -> &[u8] {
        let skip = value.iter().take_while(|b| **b == 0).count();
        &value[skip..]
    }

    /// A non-negative INTEGER in minimal form.
    fn integer(value: &[u8]) -> Vec<u8> {
        let digits = unsigned(value);
        let mut body = Vec::with_capacity(digits.len() + 1);
        if digits.first().is_none_or(|b| b & 0x80 != 0) {
            body.push(0);
        }
        body.extend_from_slice(digits);
        tlv(INTEGER, &body)
    }

    fn sequence(items: &[Vec<u8>]) -> Vec<u8> {
        tlv(SEQUENCE, &items.concat())
    }

    /// PKCS#8 v1 of a P-256 key: the ECPrivateKey (RFC 5915) carries the
    /// scalar `d` and the uncompressed public `point`, which ring requires.
    pub fn ec_p256_pkcs8(d: &[u8], point: &[u8]) -> Vec<u8> {
        let mut bits = vec![0];
        bits.extend_from_slice(point);
        let ec_private_key = sequence(&[
            integer(&[1]),
            tlv(OCTET_STRING, d),
            tlv(CONTEXT_1, &tlv(BIT_STRING, &bits)),
        ]);
        sequence(&[
            integer(&[0]),
            tlv(SEQUENCE, EC_P256_ALGORITHM),
            tlv(OCTET_STRING, &ec_private_key),
        ])
    }

    /// RSAPrivateKey (RFC 8017 A.1.2): version 0, then n, e, d, p, q, dp, dq, qi.
    pub fn rsa_private_key(parts: &[Vec<u8>]) -> Vec<u8> {
        let mut items = vec![integer(&[0])];
        items.extend(parts.iter().map(|p| integer(p)));
        sequence(&items)
    }

    /// One element: its tag, its contents and what follows it.
    fn read(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > std::mem::size_of::<usize>() || rest.len() < count {
                return None;
            }
            let (digits, after) = rest.split_at(count);
            rest = after;
            digits
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }

    /// The private scalar of a PKCS#8 EC key.
    pub fn ec_private_scalar(pkcs8: &[u8]) -> Option<&[u8]> {
        let (SEQUENCE, outer, _) = read(pkcs8)? else {
            return None;
        };
        let (INTEGER, _, rest) = read(outer)? else {
            return None;
        };
        let (SEQUENCE, _, rest) = read(rest)? else {
            return None;
        };
        let (OCTET_STRING, wrapped, _) = read(rest)? else {
            return None;
        };
        let (SEQUENCE, inner, _) = read(wrapped)? else {
            return None;
        };
        let (INTEGER, _, rest) = read(inner)? else {
            return None;
        };
        let (OCTET_STRING, d, _) = read(rest)? else {
            return None;
        };
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{KeyStore, TokenError};

    const SECRET: &[u8] = b"an-example-secret-that-is-32-chars-long!";

    fn rsa() -> Value {
        serde_json::from_str(ferrobase_testkit::TEST_RSA_JWK).unwrap()
    }

    fn set(keys: &[&Value]) -> Result<PrivateKeySet, String> {
        PrivateKeySet::parse(&Value::Array(keys.iter().map(|k| (*k).clone()).collect()).to_string())
    }

    fn store_for(keys: &PrivateKeySet) -> KeyStore {
        let mut store = KeyStore::with_secret(SECRET);
        store.set_jwks(&keys.public_jwks().to_string()).unwrap();
        store
    }

    fn header_of(token: &str) -> Value {
        let head = token.split('.').next().unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap()
    }

    #[test]
    fn generated_es256_keys_sign_tokens_their_public_half_verifies() {
        let jwk = generate_es256(true).unwrap();
        let keys = set(&[&jwk]).unwrap();
        let signer = keys.signer().unwrap();
        assert_eq!(signer.kid(), jwk["kid"]);
        assert_eq!(signer.alg(), Algorithm::ES256);
        let token = signer
            .sign(&json!({"sub": "u1", "role": "authenticated"}))
            .unwrap();
        let header = header_of(&token);
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], jwk["kid"]);
        let claims = store_for(&keys).verify(&token).unwrap();
        assert_eq!(claims["sub"], "u1");
    }

    #[test]
    fn rsa_keys_sign_rs256() {
        let keys = set(&[&rsa()]).unwrap();
        let signer = keys.signer().unwrap();
        assert_eq!(signer.alg(), Algorithm::RS256);
        let token = signer.sign(&json!({"sub": "u2"})).unwrap();
        assert_eq!(header_of(&token)["alg"], "RS256");
        assert_eq!(store_for(&keys).verify(&token).unwrap()["sub"], "u2");
    }

    #[test]
    fn the_public_set_holds_public_parameters_only() {
        let ec = generate_es256(false).unwrap();
        let keys = set(&[&ec, &rsa()]).unwrap();
        let jwks = keys.public_jwks();
        let list = jwks["keys"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        // The signing key comes first.
        assert_eq!(list[0]["kid"], "test-rsa-2048");
        for key in list {
            let names: HashSet<&str> = key
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let expected: HashSet<&str> = match key["kty"].as_str().unwrap() {
                "EC" => ["kty", "kid", "alg", "key_ops", "crv", "x", "y"].into(),
                _ => ["kty", "kid", "alg", "key_ops", "n", "e"].into(),
            };
            assert_eq!(names, expected, "{key}");
            assert_eq!(key["key_ops"], json!(["verify"]));
        }
        assert_eq!(list[1]["x"], ec["x"]);
        assert_eq!(list[1]["alg"], "ES256");
        assert_eq!(list[0]["n"], rsa()["n"]);
        assert!(!format!("{keys:?}").contains(rsa()["d"].as_str().unwrap()));
    }

    #[test]
    fn verify_only_keys_do_not_sign_but_still_verify() {
        let old = generate_es256(false).unwrap();
        let new = generate_es256(true).unwrap();
        let before = set(&[&{
            let mut k = old.clone();
            k["key_ops"] = json!(["sign", "verify"]);
            k
        }])
        .unwrap();
        let old_token = before.signer().unwrap().sign(&json!({"sub": "a"})).unwrap();
        let after = set(&[&new, &old]).unwrap();
        assert_eq!(after.signer().unwrap().kid(), new["kid"]);
        assert!(store_for(&after).verify(&old_token).is_ok());
        // Without key_ops a key only verifies; no signer means HS256 stays.
        let mut bare = generate_es256(false).unwrap();
        bare.as_object_mut().unwrap().remove("key_ops");
        assert!(set(&[&bare]).unwrap().signer().is_none());
        assert!(PrivateKeySet::parse("[]").unwrap().is_empty());
        assert_eq!(
            PrivateKeySet::parse("[]").unwrap().public_jwks(),
            json!({"keys": []})
        );
    }

    #[test]
    fn key_store_refuses_unknown_kids_mismatched_algs_and_none() {
        let keys = set(&[&generate_es256(true).unwrap()]).unwrap();
        let store = store_for(&keys);
        let kid = keys.signer().unwrap().kid().to_owned();

        // Signed by a key the store does not know.
        let stranger = set(&[&generate_es256(true).unwrap()]).unwrap();
        let token = stranger
            .signer()
            .unwrap()
            .sign(&json!({"sub": "x"}))
            .unwrap();
        assert_eq!(store.verify(&token), Err(TokenError::NoSuitableKey));

        // A known kid with another key's signature.
        let mut forged_kid = generate_es256(true).unwrap();
        forged_kid["kid"] = json!(kid);
        let forged = set(&[&forged_kid]).unwrap();
        let token = forged.signer().unwrap().sign(&json!({"sub": "x"})).unwrap();
        assert_eq!(store.verify(&token), Err(TokenError::NoSuitableKey));

        // The kid of the EC key with an HS256 signature made with the secret.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        let hs = jsonwebtoken::encode(
            &header,
            &json!({"sub": "x"}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(store.verify(&hs), Err(TokenError::NoSuitableKey));

        // alg none naming the kid.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": kid}).to_string()),
            URL_SAFE_NO_PAD.encode(json!({"sub": "x"}).to_string())
        );
        assert!(store.verify(&none).is_err());

        // HS256 with the secret and no kid still verifies.
        let plain = crate::jwt::sign_hs256(SECRET, &json!({"sub": "x"})).unwrap();
        assert!(store.verify(&plain).is_ok());
    }

    #[test]
    fn bad_key_sets_are_explained() {
        let signing = generate_es256(true).unwrap();
        let other_signing = generate_es256(true).unwrap();
        let mut no_kid = generate_es256(true).unwrap();
        no_kid.as_object_mut().unwrap().remove("kid");
        let mut public_only = generate_es256(true).unwrap();
        public_only.as_object_mut().unwrap().remove("d");
        let mut mismatched = generate_es256(true).unwrap();
        mismatched["d"] = signing["d"].clone();
        let mut p384 = generate_es256(true).unwrap();
        p384["crv"] = json!("P-384");
        let mut wrong_alg = generate_es256(true).unwrap();
        wrong_alg["alg"] = json!("RS256");
        let mut rsa_no_crt = rsa();
        rsa_no_crt.as_object_mut().unwrap().remove("qi");
        let mut rsa_broken = rsa();
        rsa_broken["p"] = rsa()["q"].clone();
        let mut odd_ops = generate_es256(true).unwrap();
        odd_ops["key_ops"] = json!(["sign", "encrypt"]);
        let mut dup = generate_es256(false).unwrap();
        dup["kid"] = signing["kid"].clone();
        let cases: Vec<(String, &str)> = vec![
            ("{not json".into(), "not valid JSON"),
            ("\"x\"".into(), "expected a JSON array"),
            (signing.to_string(), "put a single key in [ ]"),
            ("[1]".into(), "entry 0 is not a JSON object"),
            (json!([no_kid]).to_string(), "entry 0 has no kid"),
            (
                json!([{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]).to_string(),
                "symmetric (oct) keys are not accepted",
            ),
            (
                json!([{"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "AA", "d": "AA"}])
                    .to_string(),
                "key type \"OKP\" is not supported",
            ),
            (
                json!([public_only]).to_string(),
                "has no d: a private key is needed",
            ),
            (
                json!([mismatched]).to_string(),
                "not a usable P-256 key pair",
            ),
            (
                json!([p384]).to_string(),
                "curve \"P-384\" is not supported",
            ),
            (json!([wrong_alg]).to_string(), "does not fit an EC key"),
            (json!([rsa_no_crt]).to_string(), "has no qi"),
            (json!([rsa_broken]).to_string(), "not a usable RSA key pair"),
            (json!([odd_ops]).to_string(), "key_ops may hold only"),
            (
                json!([signing, other_signing]).to_string(),
                "exactly one key may sign",
            ),
            (json!([signing, dup]).to_string(), "two keys have kid"),
        ];
        for (input, expected) in cases {
            let err = PrivateKeySet::parse(&input).unwrap_err();
            assert!(err.contains(expected), "{input}: {err}");
            for secret in [&signing["d"], &rsa()["d"], &rsa()["p"]] {
                assert!(!err.contains(secret.as_str().unwrap()), "{err}");
            }
        }
    }

    #[test]
    fn a_key_set_object_is_accepted_too() {
        let jwk = generate_es256(true).unwrap();
        let keys = PrivateKeySet::parse(&json!({"keys": [jwk]}).to_string()).unwrap();
        assert_eq!(keys.keys().len(), 1);
    }

    #[test]
    fn der_lengths_use_the_long_form_past_127_bytes() {
        let long = der::rsa_private_key(&[vec![0xff; 200]]);
        assert_eq!(&long[..2], &[0x30, 0x81]);
        // The INTEGER gains a leading zero because its top bit is set.
        assert_eq!(&long[6..10], &[0x02, 0x81, 201, 0x00]);
        assert_eq!(der::unsigned(&[0, 0, 1, 2]), &[1, 2]);
    }
}

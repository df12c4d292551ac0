//! Secrets at rest: every secret the auth-service keeps in its database
//! (the token-signing keys, the refresh-successor key, queued mails with
//! their live links) is sealed with a key-encryption key (KEK) that never
//! enters the database, so a copy of the database (a file, a dump, a
//! backup) yields no usable secret (checklist K1).
//!
//! Sealing is AES-256-GCM (aws-lc-rs) with a random 96-bit nonce, the
//! purpose of the secret as associated data (a sealed value moved to
//! another row or column does not open), and the KEK's id and the algorithm
//! stored beside the sealed bytes. The KEK is 32 random bytes, base64, in a
//! file: `--key-encryption-key-file` (in production a mounted Secret; for
//! `cargo run` a file generated in the data folder, mode 0600). Its id is
//! the first 8 bytes of its SHA-256, in hex: it names the key without
//! revealing it.
//!
//! Rotation keeps everyone signed in: run with the new file as
//! `--key-encryption-key-file` and the old as
//! `--previous-key-encryption-key-file` (both open), then
//! `auth-service rotate-kek` re-seals every stored secret with the new one,
//! then drop the old. [`KeyEncryption`] is the seam for a cloud KMS: an
//! implementation whose `seal`/`open` call the KMS (or wrap a data key the
//! KMS encrypts) plugs in without touching the stores.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::{Engine, engine::general_purpose::STANDARD};
use secrecy::SecretBox;
use sha2::{Digest, Sha256};

/// The algorithm name stored beside sealed values.
pub const ALGORITHM: &str = "A256GCM";

/// A sealed secret as stored: the KEK that sealed it, the algorithm, the
/// nonce and the ciphertext (with its tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub kek_id: String,
    pub algorithm: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "a secret in the database was sealed with key-encryption key {stored}, but the key(s) \
         given are {given}: give the right --key-encryption-key-file (or the old one as \
         --previous-key-encryption-key-file while rotating)"
    )]
    UnknownKek { stored: String, given: String },
    #[error(
        "a secret sealed with key-encryption key {0} does not open with it: the key file or the \
         database is not the one it was sealed with"
    )]
    Corrupt(String),
    #[error("unknown sealing algorithm {0:?}")]
    Algorithm(String),
    #[error(
        "cannot read the key-encryption key {path}: {reason} (give the key's file with \
         --key-encryption-key-file, and the old one with --previous-key-encryption-key-file \
         while rotating)"
    )]
    File { path: String, reason: String },
    #[error("sealing failed")]
    Seal,
}

/// Seals and opens secrets.
pub trait KeyEncryption: Send + Sync {
    /// Seals `plaintext` for `purpose` with the current key.
    fn seal(&self, plaintext: &[u8], purpose: &[u8]) -> Result<Sealed, SealError>;
    /// Opens what [`KeyEncryption::seal`] sealed for `purpose`.
    fn open(&self, sealed: &Sealed, purpose: &[u8]) -> Result<SecretBox<[u8]>, SealError>;
    /// Whether `sealed` was sealed with the current key.
    fn is_current(&self, sealed: &Sealed) -> bool;
}

/// One AES-256 key and its id.
struct Kek {
    id: String,
    key: LessSafeKey,
}

impl Kek {
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let key = UnboundKey::new(&AES_256_GCM, bytes).ok()?;
        Some(Self {
            id: hex::encode(&Sha256::digest(bytes)[..8]),
            key: LessSafeKey::new(key),
        })
    }

    /// Reads a KEK file: 32 bytes, base64 (whitespace around ignored).
    fn read(path: &Path) -> Result<Self, SealError> {
        let fail = |reason: &str| SealError::File {
            path: path.display().to_string(),
            reason: reason.to_owned(),
        };
        let text = std::fs::read_to_string(path).map_err(|error| fail(&error.to_string()))?;
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| fail("not base64"))?;
        if bytes.len() != 32 {
            return Err(fail("not 32 bytes"));
        }
        Self::from_bytes(&bytes).ok_or_else(|| fail("not an AES-256 key"))
    }
}

/// KEKs from files: the current one seals, it and the previous ones open.
pub struct LocalKeks {
    current: Kek,
    previous: Vec<Kek>,
}

impl LocalKeks {
    /// The KEK in `current` (created, mode 0600, when `create` and it is
    /// missing) and, for rotation, the one in `previous`.
    pub fn load(current: &Path, previous: Option<&Path>, create: bool) -> Result<Self, SealError> {
        if create && !current.exists() {
            generate(current)?;
            tracing::info!(path = %current.display(), "generated a key-encryption key");
        }
        Ok(Self {
            current: Kek::read(current)?,
            previous: previous.map(Kek::read).transpose()?.into_iter().collect(),
        })
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    fn by_id(&self, id: &str) -> Option<&Kek> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|kek| kek.id == id)
    }
}

/// Writes a new random KEK into `path`, readable by this user only.
pub fn generate(path: &Path) -> Result<(), SealError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let fail = |error: std::io::Error| SealError::File {
        path: path.display().to_string(),
        reason: error.to_string(),
    };
    if let Some(folder) = path
        .parent()
        .filter(|folder| !folder.as_os_str().is_empty())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .map_err(fail)?;
    }
    let key: [u8; 32] = rand::random();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    writeln!(file, "{}", STANDARD.encode(key)).map_err(fail)?;
    file.sync_all().map_err(fail)
}

impl KeyEncryption for LocalKeks {
    fn seal(&self, plaintext: &[u8], purpose: &[u8]) -> Result<Sealed, SealError> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut ciphertext = plaintext.to_vec();
        self.current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose),
                &mut ciphertext,
            )
            .map_err(|_| SealError::Seal)?;
        Ok(Sealed {
            kek_id: self.current.id.clone(),
            algorithm: ALGORITHM.to_owned(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    fn open(&self, sealed: &Sealed, purpose: &[u8]) -> Result<SecretBox<[u8]>, SealError> {
        if sealed.algorithm != ALGORITHM {
            return Err(SealError::Algorithm(sealed.algorithm.clone()));
        }
        let kek = self
            .by_id(&sealed.kek_id)
            .ok_or_else(|| SealError::UnknownKek {
                stored: sealed.kek_id.clone(),
                given: std::iter::once(&self.current)
                    .chain(&self.previous)
                    .map(|kek| kek.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let nonce = Nonce::try_assume_unique_for_key(&sealed.nonce)
            .map_err(|_| SealError::Corrupt(sealed.kek_id.clone()))?;
        let mut buffer = sealed.ciphertext.clone();
        let plaintext = kek
            .key
            .open_in_place(nonce, Aad::from(purpose), &mut buffer)
            .map_err(|_| SealError::Corrupt(sealed.kek_id.clone()))?;
        Ok(SecretBox::new(plaintext.to_vec().into_boxed_slice()))
    }

    fn is_current(&self, sealed: &Sealed) -> bool {
        sealed.kek_id == self.current.id
    }
}

/// Where `cargo run` keeps its generated KEK.
pub fn default_path(data_dir: &Path) -> PathBuf {
    data_dir.join("key-encryption-key")
}

/// At start-up: seals every secret still stored plain (from before
/// sealing), and checks that every sealed one opens, so a wrong key file
/// stops the service at once with a clear message rather than at the
/// first sign-in.
pub async fn seal_and_check(
    store: &dyn crate::store::AuthStore,
    keks: &dyn KeyEncryption,
) -> anyhow::Result<()> {
    for (slot, secret) in store.stored_secrets().await? {
        match secret {
            crate::store::StoredSecret::Plain(plain) => {
                let sealed = keks.seal(&plain, &slot.purpose())?;
                store.reseal(&slot, &sealed).await?;
                tracing::info!(?slot, "sealed a secret stored before sealing");
            }
            crate::store::StoredSecret::Sealed(sealed) => {
                keks.open(&sealed, &slot.purpose())?;
            }
        }
    }
    Ok(())
}

/// `auth-service rotate-kek`: every stored secret sealed again with the
/// current KEK (opened with it or the previous one). Nobody is signed out:
/// the secrets themselves do not change. Returns how many were re-sealed.
pub async fn rotate(
    store: &dyn crate::store::AuthStore,
    keks: &dyn KeyEncryption,
) -> anyhow::Result<usize> {
    let mut resealed = 0;
    for (slot, secret) in store.stored_secrets().await? {
        let plain = match &secret {
            crate::store::StoredSecret::Sealed(sealed) if keks.is_current(sealed) => continue,
            crate::store::StoredSecret::Sealed(sealed) => keks.open(sealed, &slot.purpose())?,
            crate::store::StoredSecret::Plain(plain) => {
                SecretBox::new(plain.clone().into_boxed_slice())
            }
        };
        let sealed = keks.seal(
            secrecy::ExposeSecret::expose_secret(&plain),
            &slot.purpose(),
        )?;
        store.reseal(&slot, &sealed).await?;
        resealed += 1;
    }
    Ok(resealed)
}

/// Opens a stored secret (sealing is required: a plain one was sealed at
/// start-up).
pub fn open_stored(
    keks: &dyn KeyEncryption,
    secret: &crate::store::StoredSecret,
    slot: &crate::store::SecretSlot,
) -> Result<SecretBox<[u8]>, SealError> {
    match secret {
        crate::store::StoredSecret::Sealed(sealed) => keks.open(sealed, &slot.purpose()),
        crate::store::StoredSecret::Plain(plain) => {
            Ok(SecretBox::new(plain.clone().into_boxed_slice()))
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn a_sealed_secret_opens_with_its_key_and_purpose_only() {
        let folder = tempfile::tempdir().unwrap();
        let (first, second) = (folder.path().join("a"), folder.path().join("b"));
        let keks = LocalKeks::load(&first, None, true).unwrap();
        let sealed = keks.seal(b"private key", b"signing key kid-1").unwrap();
        assert_ne!(sealed.ciphertext, b"private key");
        assert_eq!(sealed.kek_id, keks.current_id());
        let opened = keks.open(&sealed, b"signing key kid-1").unwrap();
        assert_eq!(opened.expose_secret(), b"private key");
        assert!(keks.open(&sealed, b"signing key kid-2").is_err());

        // Another key: refused by id, naming both.
        let other = LocalKeks::load(&second, None, true).unwrap();
        let refused = other.open(&sealed, b"signing key kid-1").unwrap_err();
        assert!(matches!(refused, SealError::UnknownKek { .. }), "{refused}");
        // During a rotation the old one still opens; sealing uses the new.
        let rotating = LocalKeks::load(&second, Some(&first), false).unwrap();
        assert!(rotating.open(&sealed, b"signing key kid-1").is_ok());
        assert!(!rotating.is_current(&sealed));
        assert!(rotating.is_current(&rotating.seal(b"x", b"y").unwrap()));
    }

    #[test]
    fn a_generated_kek_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("data").join("kek");
        LocalKeks::load(&path, None, true).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let folder_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(folder_mode, 0o700);
        assert!(LocalKeks::load(&folder.path().join("missing"), None, false).is_err());
    }
}

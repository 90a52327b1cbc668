//! DKIM keys and their rotation.
//!
//! Two selectors are always published. Rotation promotes the standby selector
//! (published long before) to active only when the customer's CNAME to it
//! verifies, keeps the old key published as `retiring` for mail in flight, and
//! then replaces it with a fresh standby key. The plan is pure; the controller
//! generates the keys it asks for, writes the Secret, then the status.
//!
//! Ordering is what makes a crash harmless: a key reaches the Secret before its
//! public half reaches status, and the DNS zone is built from status, so nothing
//! is ever published whose private key is not already stored.

pub mod keys;
pub mod rotation;

pub use keys::{KeyError, KeyMaterial, StoredKeys, generate, parse_pem, secret_data, secret_name};
pub use rotation::{Note, Plan, PlanInput, plan};

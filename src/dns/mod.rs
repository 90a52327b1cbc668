//! The operator's DNS zone: the record model, the diff between two zone states,
//! the embedded authoritative server and the RFC2136 backend.

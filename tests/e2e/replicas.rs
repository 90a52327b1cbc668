//! Two operator replicas with leader election (see below).

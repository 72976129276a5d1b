//! TODO: oci

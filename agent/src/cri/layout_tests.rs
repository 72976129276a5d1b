//! Placeholder: the CRI field offsets read from a real runtime's getters, checked against the
//! layout Go itself gives the same cri-api version (being written).

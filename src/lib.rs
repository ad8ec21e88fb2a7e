//! switchyard

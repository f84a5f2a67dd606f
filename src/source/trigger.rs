//! Trigger capture.

//! Delivery: workers claim due deliveries, POST them signed, record every
//! attempt and mark each delivered, scheduled for retry, or dead.

//! Every `google.rpc.ErrorInfo` reason ordermesh sends: the contract between
//! the services (the saga branches on its peers' reasons) and with clients.
//! Their domain is [`DOMAIN`].

/// The ErrorInfo domain of every ordermesh error.
pub const DOMAIN: &str = "ordermesh.dev";

// Inventory.
pub const PRODUCT_NOT_FOUND: &str = "PRODUCT_NOT_FOUND";
pub const OUT_OF_STOCK: &str = "OUT_OF_STOCK";
pub const RESERVATION_CONFLICT: &str = "RESERVATION_CONFLICT";
pub const RESERVATION_RELEASED: &str = "RESERVATION_RELEASED";
pub const RESERVATION_NOT_FOUND: &str = "RESERVATION_NOT_FOUND";
pub const STOCK_NEGATIVE: &str = "STOCK_NEGATIVE";
pub const STOCK_OVERFLOW: &str = "STOCK_OVERFLOW";

// Payment.
pub const PROCESSOR_UNAVAILABLE: &str = "PROCESSOR_UNAVAILABLE";
pub const PAYMENT_CONFLICT: &str = "PAYMENT_CONFLICT";
pub const PAYMENT_VOIDED: &str = "PAYMENT_VOIDED";
pub const PAYMENT_NOT_FOUND: &str = "PAYMENT_NOT_FOUND";

// Orders.
pub const ORDER_NOT_FOUND: &str = "ORDER_NOT_FOUND";
pub const IDEMPOTENCY_KEY_REUSED: &str = "IDEMPOTENCY_KEY_REUSED";
pub const ORDER_NOT_CANCELLABLE: &str = "ORDER_NOT_CANCELLABLE";

// Inventory and payment.
/// A saga step carried an older fencing number than one already seen for
/// its order: its sender lost the order's lease and must stop.
pub const STALE_SAGA_STEP: &str = "STALE_SAGA_STEP";

// Any service.
/// A server stream reached its longest life; watch again to go on.
pub const STREAM_LIFETIME: &str = "STREAM_LIFETIME";

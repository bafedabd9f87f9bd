//! The demo catalog seeded into an empty database, so a fresh system has
//! something to sell. `sku-scale` is kept scarce to make out-of-stock easy
//! to see.

/// (product_id, name, price in US cents, initial stock)
pub const DEMO_CATALOG: &[(&str, &str, i64, i64)] = &[
    ("sku-espresso", "Espresso beans 1kg", 2499, 100),
    ("sku-filter", "Paper filters (100)", 699, 500),
    ("sku-grinder", "Burr grinder", 12900, 20),
    ("sku-kettle", "Gooseneck kettle", 5900, 30),
    ("sku-mug", "Ceramic mug", 1200, 200),
    ("sku-scale", "Brew scale", 3900, 3),
];

-- Relational layout for the data in inventory.py (SQLite dialect).
-- Prices are integer cents, as in the Python data classes.

CREATE TABLE IF NOT EXISTS item (
    sku          TEXT PRIMARY KEY CHECK (length(trim(sku)) > 0),
    name         TEXT NOT NULL,
    price_cents  INTEGER NOT NULL CHECK (price_cents >= 0),
    quantity     INTEGER NOT NULL DEFAULT 0 CHECK (quantity >= 0)
);

CREATE TABLE IF NOT EXISTS item_tag (
    sku  TEXT NOT NULL REFERENCES item (sku) ON DELETE CASCADE,
    tag  TEXT NOT NULL,
    PRIMARY KEY (sku, tag)
);

INSERT INTO item (sku, name, price_cents, quantity) VALUES
    ('TEA-01', 'Green tea, 100 g', 450, 12),
    ('MUG-02', 'Enamel mug', 1290, 3),
    ('S-1', 'Sauna whisk', 990, 4);

INSERT INTO item_tag (sku, tag) VALUES
    ('TEA-01', 'food'),
    ('S-1', 'seasonal');

-- Items running low, most valuable stock first.
SELECT sku, name, quantity, price_cents * quantity AS value_cents
FROM item
WHERE quantity < 5
ORDER BY value_cents DESC;

-- Total stock value per tag, with untagged items grouped under '(none)'.
SELECT coalesce(t.tag, '(none)') AS tag,
       sum(i.price_cents * i.quantity) AS value_cents
FROM item AS i
LEFT JOIN item_tag AS t ON t.sku = i.sku
GROUP BY coalesce(t.tag, '(none)')
ORDER BY tag;

-- hubcast's tables (version 1). Every unsigned 64-bit number (event numbers, ids, times in
-- milliseconds) is stored order-preserving as a signed bigint: the value minus 2^63, so that
-- numbers with the top bit set (delivery documents) and u64::MAX sort where they belong. Text
-- keys use the "C" collation: byte order, as the embedded backends sort.

CREATE TABLE meta (
    k text COLLATE "C" PRIMARY KEY,
    v bytea NOT NULL
);

-- The log's lead and size: one row, locked by each append (dense numbers, several writers).
CREATE TABLE log_head (
    id int PRIMARY KEY CHECK (id = 1),
    lead bigint NOT NULL,
    events bigint NOT NULL,
    bytes bigint NOT NULL
);
INSERT INTO log_head VALUES (1, -9223372036854775808, 0, 0);

CREATE SEQUENCE ids;

CREATE TABLE subs (
    topic text COLLATE "C" NOT NULL,
    destination text COLLATE "C" NOT NULL,
    callback text COLLATE "C" NOT NULL,
    expires_ms bigint NOT NULL,
    rec jsonb NOT NULL,
    PRIMARY KEY (topic, destination, callback)
);
CREATE INDEX subs_expiry ON subs (expires_ms);
CREATE INDEX subs_callback ON subs (callback);

CREATE TABLE intents (id bigint PRIMARY KEY, rec jsonb NOT NULL);

CREATE TABLE pings (
    id bigint PRIMARY KEY,
    topic text COLLATE "C" NOT NULL,
    received_ms bigint NOT NULL,
    fat_type text,
    fat_body bytea
);
CREATE INDEX pings_topic ON pings (topic, id);

CREATE TABLE topic_states (topic text COLLATE "C" PRIMARY KEY, rec jsonb NOT NULL);

CREATE TABLE events (
    seq bigint PRIMARY KEY,
    topic text COLLATE "C" NOT NULL,
    topic_seq bigint NOT NULL,
    origin text NOT NULL,
    origin_seq bigint NOT NULL,
    path jsonb NOT NULL,
    content_type text NOT NULL,
    body bytea NOT NULL,
    created_ms bigint NOT NULL
);

-- Delivery documents: merged events, and copies of pruned events still referred to.
CREATE TABLE docs (LIKE events INCLUDING ALL);

CREATE TABLE topic_seqs (topic text COLLATE "C" PRIMARY KEY, last bigint NOT NULL);
CREATE TABLE cursors (consumer text COLLATE "C" PRIMARY KEY, seq bigint NOT NULL);

CREATE TABLE jobs (
    event bigint NOT NULL,
    destination text COLLATE "C" NOT NULL,
    topic text NOT NULL,
    cursor text,
    PRIMARY KEY (event, destination)
);

CREATE TABLE retries (
    due_ms bigint NOT NULL,
    event bigint NOT NULL,
    topic text COLLATE "C" NOT NULL,
    callback text COLLATE "C" NOT NULL,
    rec jsonb NOT NULL,
    PRIMARY KEY (due_ms, event, topic, callback)
);
CREATE INDEX retries_event ON retries (event);

CREATE TABLE dead_letters (id bigint PRIMARY KEY, event bigint NOT NULL, rec jsonb NOT NULL);
CREATE INDEX dead_letters_event ON dead_letters (event);

CREATE TABLE hosted (name text COLLATE "C" PRIMARY KEY, rec jsonb NOT NULL);
CREATE TABLE hosted_entries (
    name text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    key text COLLATE "C" NOT NULL,
    id text NOT NULL,
    updated_ms bigint NOT NULL,
    rec jsonb NOT NULL,
    PRIMARY KEY (name, seq),
    UNIQUE (name, key)
);
CREATE INDEX hosted_entries_id ON hosted_entries (name, id);
CREATE TABLE hosted_seqs (name text COLLATE "C" PRIMARY KEY, last bigint NOT NULL);
CREATE TABLE bounces (
    topic text NOT NULL,
    address text NOT NULL,
    n int NOT NULL,
    PRIMARY KEY (topic, address)
);
CREATE TABLE bounce_tags (tag text PRIMARY KEY, topic text NOT NULL, address text NOT NULL);

-- Claimed work: one lease per item (k names it), and one per destination server whose
-- deliveries a node makes (k = 'd:' || destination), so that one node at a time sends to it.
CREATE TABLE leases (
    k text COLLATE "C" PRIMARY KEY,
    node text NOT NULL,
    until_ms bigint NOT NULL,
    dest text COLLATE "C"
);
CREATE INDEX leases_node ON leases (node);
CREATE INDEX leases_dest ON leases (dest) WHERE dest IS NOT NULL;

-- The nodes of the cluster and their heartbeats.
CREATE TABLE nodes (
    id text COLLATE "C" PRIMARY KEY,
    address text NOT NULL,
    started_ms bigint NOT NULL,
    heartbeat_ms bigint NOT NULL
);

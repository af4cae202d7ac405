DROP VIEW IF EXISTS cost_by_identity_1m_mv;
DROP TABLE IF EXISTS cost_by_identity_1m;
DROP VIEW IF EXISTS cost_by_identity_1h_mv;
DROP TABLE IF EXISTS cost_by_identity_1h;

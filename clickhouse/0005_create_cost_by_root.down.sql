DROP VIEW IF EXISTS cost_by_root_1m_mv;
DROP TABLE IF EXISTS cost_by_root_1m;
DROP VIEW IF EXISTS cost_by_root_1h_mv;
DROP TABLE IF EXISTS cost_by_root_1h;

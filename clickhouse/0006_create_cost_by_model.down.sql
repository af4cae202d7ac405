DROP VIEW IF EXISTS cost_by_model_1m_mv;
DROP TABLE IF EXISTS cost_by_model_1m;
DROP VIEW IF EXISTS cost_by_model_1h_mv;
DROP TABLE IF EXISTS cost_by_model_1h;

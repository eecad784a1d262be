//! Table tests of the three sources (fixtures in tests/migrate/).

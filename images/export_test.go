package images

// Unpacks reports how many layers the store has unpacked, for tests.
func (s *Store) Unpacks() int64 { return s.unpacks.Load() }

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

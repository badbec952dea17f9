package images

// Unpacks reports how many layers the store has unpacked, for tests.
func (s *Store) Unpacks() int64 { return s.unpacks.Load() }

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// PlainHTTPAllowed reports whether a store made with opts may reach host over plain HTTP.
func PlainHTTPAllowed(host string, opts ...Option) bool {
	o := options{insecure: map[string]bool{}}
	for _, opt := range opts {
		opt(&o)
	}
	return o.plainHTTPAllowed(host)
}

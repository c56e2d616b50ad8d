package bridge

// RoutePatterns lists every route's mux pattern ("METHOD /path/{wildcard}"), so tests
// reach each route the bridge has, not a copy of the list.
func RoutePatterns() []string {
	var out []string
	for _, rt := range New(Options{}).routes() {
		out = append(out, rt.pattern)
	}
	return out
}

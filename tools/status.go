package tools

import (
	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
)

// StatusReport is the single description of a gateway's mTLS state, shared by
// `nefia mtls status --json` and the nefia.mtls.status tool so the two can
// never disagree.
type StatusReport struct {
	Enabled    bool             `json:"enabled"`
	ListenAddr string           `json:"listen_addr"`
	StateDir   string           `json:"state_dir"`
	ConfigFile string           `json:"config_file"`
	CA         *pki.CertInfo    `json:"ca"`
	Server     *pki.CertInfo    `json:"server"`
	Clients    pki.ClientCounts `json:"clients"`
	Problems   []string         `json:"problems"`
	// Connections is the number of live mTLS connections; set only by a
	// running gateway.
	Connections *int `json:"connections,omitempty"`
}

// BuildStatus combines the configuration and the state directory into a
// report. A configuration that failed to load is reported as a problem, with
// defaults shown, rather than hiding the rest of the report.
func BuildStatus(store *pki.Store, cfg config.Loaded, cfgErr error) StatusReport {
	st := store.Status()
	r := StatusReport{
		Enabled:    cfg.MCP.MTLS.Enabled,
		ListenAddr: cfg.MCP.MTLS.ListenAddr,
		StateDir:   store.Dir(),
		ConfigFile: cfg.Path,
		CA:         st.CA,
		Server:     st.Server,
		Clients:    st.Clients,
		Problems:   st.Problems,
	}
	if cfgErr != nil {
		r.Problems = append(r.Problems, cfgErr.Error())
	}
	return r
}

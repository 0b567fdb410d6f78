// Renders an Ollama TEMPLATE with Go's text/template, the way Ollama does:
// the template gets .Messages (each with .Role and .Content).
// stdin: {"template": "...", "conversations": [[{"role": ..., "content": ...}, ...], ...]}
// stdout: a JSON list of the rendered strings, one per conversation.
package main

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type input struct {
	Template      string      `json:"template"`
	Conversations [][]Message `json:"conversations"`
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	tmpl := template.Must(template.New("ollama").Parse(in.Template))
	out := []string{}
	for _, messages := range in.Conversations {
		var b strings.Builder
		if err := tmpl.Execute(&b, map[string]any{"Messages": messages}); err != nil {
			panic(err)
		}
		out = append(out, b.String())
	}
	json.NewEncoder(os.Stdout).Encode(out)
}

// Renders Ollama TEMPLATEs with Go's text/template, the way Ollama does:
// the template gets .Messages (each with .Role and .Content).
// stdin: {"template": "...", "conversations": [[{"role": ..., "content": ...}, ...], ...]}
// stdout: a JSON list of the rendered strings, one per conversation.
// With "templates": [...] instead of "template", stdout is one such list per
// template, and a template Go cannot parse or run gives ["error: ..."].
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
	Templates     []string    `json:"templates"`
	Conversations [][]Message `json:"conversations"`
}

func render(text string, conversations [][]Message) ([]string, error) {
	tmpl, err := template.New("ollama").Parse(text)
	if err != nil {
		return nil, err
	}
	out := []string{}
	for _, messages := range conversations {
		var b strings.Builder
		if err := tmpl.Execute(&b, map[string]any{"Messages": messages}); err != nil {
			return nil, err
		}
		out = append(out, b.String())
	}
	return out, nil
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	if in.Templates == nil {
		out, err := render(in.Template, in.Conversations)
		if err != nil {
			panic(err)
		}
		json.NewEncoder(os.Stdout).Encode(out)
		return
	}
	all := [][]string{}
	for _, text := range in.Templates {
		out, err := render(text, in.Conversations)
		if err != nil {
			out = []string{"error: " + err.Error()}
		}
		all = append(all, out)
	}
	json.NewEncoder(os.Stdout).Encode(all)
}

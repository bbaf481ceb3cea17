"""What every run shares below the agents: its settings (gin), its directory, its errors."""

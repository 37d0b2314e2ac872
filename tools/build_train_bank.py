"""Build prompts/train_tasks.jsonl, the bank of training tasks (`instruct.bank`), from the frames below.

The self-instruct stage asks the policy to write new tasks; at 135M most of what it writes is not a
task ("Generational Taxi Importing tips!"), and writing 240 of them costs about 9 minutes a round on 2
CPU cores. The bank is the alternative: tasks written for this project, one frame per kind of request
and a list of subjects per frame, across the categories the held-out benchmark covers. A round takes
the next unused tasks in a fixed shuffled order and attaches constraints to them as it does to
self-written ones.

Every task is checked against the held-out benchmark and the seed tasks: one whose ROUGE-L against any
of them exceeds 0.7 is left out (and counted), so the bank never carries a held-out prompt into
training. Tasks within the bank may share a frame; that is the point of a frame.

    .venv/bin/python tools/build_train_bank.py

Running it again gives the same file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from selfalign.rouge import RougeIndex

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
SEED = 20261203
NEAR = 0.7

# (category, frame, subjects): each subject fills the frame's {} once.
FRAMES: list[tuple[str, str, list[str]]] = [
    ("writing", "Write a short poem about {}.", [
        "a kettle coming to the boil", "the last bus of the night", "a sunflower turning its head",
        "an old pair of boots", "snow on a city roof", "a fox crossing a parking lot", "the smell of rain on dust",
        "a grandmother's sewing box", "a lighthouse keeper's cat", "the first day of spring break",
        "a broken umbrella", "a train station at dawn", "a jar of buttons", "the sound of a distant lawnmower",
        "a kite stuck in a tree", "an empty swimming pool in winter"]),
    ("writing", "Write a very short story in which {}.", [
        "a robot learns to bake bread", "two strangers share an umbrella", "a lost dog finds its way home",
        "a child discovers a door in the garden wall", "the power goes out during a dinner party",
        "a mail carrier delivers a letter fifty years late", "a chess piece goes missing before a final",
        "a baker forgets the sugar on the busiest day of the year", "a goat wanders into a library",
        "an astronaut hears music on the radio", "a painter runs out of blue paint",
        "a town's only clock stops at noon", "twins swap places for a day at school",
        "a fisherman catches a bottle with a map inside"]),
    ("writing", "Write a letter to {}.", [
        "a landlord asking for a broken heater to be fixed", "your future self ten years from now",
        "a local newspaper about the lack of bike lanes", "a teacher who changed your mind about science",
        "a company whose product arrived damaged", "a pen pal in another country describing your town",
        "the city council supporting a new park", "a friend who just moved far away",
        "a hotel thanking the staff for a pleasant stay", "a coach thanking them for a great season",
        "an author whose book helped you through a hard year", "a neighbor about a barking dog"]),
    ("writing", "Write a product description for {}.", [
        "a folding bicycle for city commuters", "a candle that smells like fresh bread", "noise-cancelling earmuffs",
        "a solar-powered phone charger", "a cookbook for students with small kitchens", "a wooden puzzle box",
        "a waterproof notebook for hikers", "a lamp that wakes you with gradual light", "a dog bed for old dogs",
        "a set of reusable food wraps", "a board game about running a bakery", "a pocket-sized weather station"]),
    ("writing", "Write a diary entry from the point of view of {}.", [
        "a houseplant on a windowsill", "a soccer ball after a big match", "a pigeon who lives at a train station",
        "a dragon who is afraid of heights", "the last cookie in the jar", "a museum guard on a quiet Tuesday",
        "a snowman as the weather warms", "a submarine cook", "a library book that is always overdue",
        "a turtle in a school classroom", "a traffic light at a busy crossing", "a scarecrow in a field of corn"]),
    ("writing", "Write a short speech for {}.", [
        "the opening of a community garden", "a retirement party for a school janitor",
        "the first day of a coding club", "a best friend's birthday dinner", "the end of a charity run",
        "welcoming new employees to a small bakery", "a science fair awards ceremony",
        "the launch of a neighborhood book swap", "a farewell to a colleague moving abroad",
        "thanking volunteers after a beach clean-up"]),
    ("writing", "Write an invitation to {}.", [
        "a board game night at your apartment", "a picnic by the river", "a surprise party for a coworker",
        "a neighborhood yard sale", "a book club's first meeting", "a stargazing evening in the park",
        "a pancake breakfast fundraiser", "a family reunion at the lake", "a costume party with a space theme",
        "a free workshop on fixing bicycles"]),
    ("writing", "Write a review of {}.", [
        "a café that only serves soup", "a movie about a talking horse", "a pair of cheap running shoes",
        "a museum of old typewriters", "a weather app that is always wrong", "a hotel with a rooftop garden",
        "a mystery novel set on a train", "a city bus route you take every day", "a pizza with pineapple and chili",
        "an online course on drawing"]),
    ("writing", "Write a dialogue between {}.", [
        "a cat and a vacuum cleaner", "a customer and a very honest salesperson", "the sun and the moon",
        "a nervous student and a kind examiner", "two astronauts arguing about snacks",
        "a chef and a picky food critic", "a tourist and a local who gives strange directions",
        "a grandparent explaining a rotary phone to a child", "a tree and a woodpecker",
        "a detective and a suspicious parrot"]),
    ("writing", "Write a social media post announcing {}.", [
        "that a bakery is opening a second shop", "a free concert in the town square",
        "a lost and found cat", "a new hiking trail", "the winner of a pie contest",
        "a library's longer opening hours", "a school's robotics team going to the finals",
        "a community fridge that anyone can use"]),
    ("explanation", "Explain how {}.", [
        "a refrigerator keeps food cold", "a vaccine trains the immune system", "the gears on a bicycle help a rider",
        "a thermostat keeps a room at one temperature", "a credit card payment goes through",
        "noise-cancelling headphones block sound", "a hot air balloon rises and comes down",
        "an elevator decides which floor to visit next", "a touch screen senses a finger",
        "a letter travels from one country to another", "a dam produces power", "a barcode scanner reads a code",
        "a smoke detector notices smoke", "a sailboat can move against the wind", "an electric car is charged",
        "a library catalog helps you find a book", "a bank decides whether to give someone a loan",
        "a pressure cooker cooks beans quickly", "a seed knows which way is up", "a lock opens only with its key"]),
    ("explanation", "Explain to a ten-year-old why {}.", [
        "leaves change color in autumn", "we have leap years", "the ocean is salty", "ice floats on water",
        "people get hiccups", "bread goes stale", "the moon looks different each night", "we need to sleep",
        "cats purr", "thunder comes after lightning", "some metals rust", "plants need sunlight",
        "we yawn", "the sky gets dark earlier in winter", "onions make people cry"]),
    ("explanation", "What is the difference between {}?", [
        "weather and climate", "a virus and a bacterium", "a loan and a grant", "speed and velocity",
        "a simile and a metaphor", "a lake and a pond", "baking soda and baking powder",
        "a democracy and a monarchy", "RAM and storage in a computer", "a crocodile and an alligator",
        "a debit card and a credit card", "a comet and an asteroid", "a hurricane and a tornado",
        "a rabbit and a hare", "an introvert and an extrovert", "interest and dividends",
        "a fruit and a vegetable in cooking", "a poem and a song lyric", "a mountain and a hill",
        "a cold and the flu"]),
    ("explanation", "Describe the main steps of {}.", [
        "making cheese", "how a bill becomes a law", "recycling a plastic bottle", "brewing a cup of tea",
        "planting a tree", "the water cycle", "publishing a book", "building a sandcastle that lasts",
        "how a caterpillar becomes a butterfly", "changing a flat tire", "writing a research essay",
        "how bread rises", "applying for a passport", "making paper from wood", "training a puppy to sit"]),
    ("qa", "Who usually {}, and why?", [
        "wins at rock-paper-scissors when the game is random", "uses a stethoscope",
        "checks the tickets on a train", "decides the menu in a restaurant", "writes the rules of a board game",
        "repairs the roads in a city", "reads the weather forecast on TV", "tunes a piano"]),
    ("qa", "Why do {}?", [
        "birds fly south for the winter", "people shake hands", "bridges have gaps in them",
        "cats like boxes", "we put salt on icy roads", "some people talk in their sleep",
        "bakers score the top of bread", "airplanes leave white trails", "old books smell sweet",
        "tomatoes taste better in summer", "we feel dizzy after spinning", "bees make honey"]),
    ("advice", "Give advice to someone who {}.", [
        "is nervous about their first job interview", "wants to start running but hates mornings",
        "keeps forgetting to drink water", "just adopted an older cat", "is moving to a city where they know no one",
        "wants to read more books", "spends too much money on takeaway food", "is learning to play the guitar",
        "cannot stop checking their phone at night", "has a big exam in two weeks",
        "wants to ask for a raise", "is planning their first solo trip", "feels stuck in a boring routine",
        "is starting a vegetable garden on a balcony", "has trouble saying no to extra work",
        "wants to make friends after retiring", "is teaching a teenager to drive",
        "needs to give a presentation tomorrow", "wants to keep a journal but never keeps it up",
        "is buying their first used car"]),
    ("advice", "How can I {}?", [
        "keep my houseplants alive while on vacation", "save money on groceries", "become a better listener",
        "fall asleep faster", "make my small apartment feel bigger", "remember people's names",
        "stay focused when working from home", "learn a language with only ten minutes a day",
        "keep my bike from getting stolen", "cook rice without burning it", "write a clear email",
        "stop procrastinating on chores", "make a long flight more comfortable", "organise my closet",
        "prepare for a job fair", "get better at chess", "reduce the clutter on my desk",
        "be more patient in traffic", "explain my hobby to people who find it boring",
        "stay warm in a cold flat without a big heating bill"]),
    ("advice", "What should I think about before {}?", [
        "adopting a dog", "quitting my job to travel", "lending money to a friend", "buying a house",
        "signing up for a marathon", "starting a small online shop", "moving in with a partner",
        "going back to school as an adult", "choosing a phone plan", "planting a fruit tree",
        "getting a tattoo", "joining a gym", "renting out my spare room", "learning to fly a drone",
        "hosting a dinner for twelve people"]),
    ("coding", "Write a Python function that {}.", [
        "checks whether a word is a palindrome", "counts the vowels in a string",
        "returns the second largest number in a list", "converts Celsius to Fahrenheit",
        "removes duplicate items from a list while keeping their order", "reverses the words in a sentence",
        "finds the most common letter in a text", "checks whether a year is a leap year",
        "merges two sorted lists into one sorted list", "returns the factorial of a number",
        "splits a list into chunks of a given size", "counts how many times each word appears in a text",
        "checks whether two words are anagrams", "returns the sum of the digits of an integer",
        "flattens a list of lists", "validates that a string looks like an email address",
        "rounds a price to the nearest five cents", "finds the longest word in a sentence",
        "turns a number of seconds into hours, minutes and seconds", "capitalises the first letter of every word"]),
    ("coding", "How do I {} in {}?", []),  # filled below from CODING_TASKS x LANGUAGES
    ("coding", "Explain what this code does: {}", [
        "`sum(x for x in range(10) if x % 2 == 0)`", "`sorted(words, key=len)`",
        "`[line.strip() for line in open('notes.txt')]`", "`{k: v for k, v in pairs if v}`",
        "`while n > 1: n = n // 2`", "`print(' '.join(reversed(text.split())))`",
        "`total = total + price * quantity`", "`if not items: return None`",
        "`names = list(set(names))`", "`x, y = y, x`"]),
    ("coding", "What does the term '{}' mean in programming?", [
        "recursion", "variable scope", "a race condition", "an API", "garbage collection", "a hash function",
        "refactoring", "a unit test", "an off-by-one error", "immutability", "a callback", "version control"]),
    ("writing", "Write a bedtime story about {}.", [
        "a sleepy whale who cannot find a quiet spot", "a star that wants to visit the sea",
        "a teddy bear that goes on a night walk", "a little cloud afraid of rain", "a mouse who collects buttons",
        "a train that carries dreams", "a hedgehog planning a tea party", "a moon that loses its glow",
        "an owl who cannot stay awake", "a boat made from a walnut shell"]),
    ("writing", "Write a recipe card for {}.", [
        "a three-ingredient tomato soup", "pancakes for a camping stove", "a salad that keeps for two days",
        "lemonade with less sugar", "a sandwich a child can make alone", "oatmeal cookies without eggs",
        "a quick vegetable stir-fry", "hot chocolate for a crowd", "banana bread from very ripe bananas",
        "a dip made from leftover beans"]),
    ("writing", "Write a short news report about {}.", [
        "a village that built its own internet", "a record number of turtles hatching on a beach",
        "a school that replaced its bells with music", "a lost wallet returned with a thank-you note inside",
        "a city that painted its crossings in bright colors", "a library that lends out tools",
        "a teenager who repaired a hundred old laptops for neighbors", "a bakery powered by a bicycle",
        "a town holding its first night market", "a zoo welcoming a baby giraffe"]),
    ("writing", "Write a motivational note for {}.", [
        "a friend starting a new job", "a student before a final exam", "a team that lost a close game",
        "someone learning to swim as an adult", "a nurse finishing a long shift", "a child on the first day of school",
        "a runner before a first race", "a colleague who made a mistake"]),
    ("writing", "Write song lyrics about {}.", [
        "a road trip with old friends", "missing home while studying abroad", "a summer thunderstorm",
        "a dog waiting at the window", "fixing a broken radio", "the first snow of the year",
        "a diner that never closes", "learning to ride a bike"]),
    ("writing", "Write the opening paragraph of a mystery set {}.", [
        "on a night ferry", "in a school during a snow day", "at a village flower show", "in a closed ski resort",
        "inside a museum of clocks", "on a research ship in the Arctic", "at a wedding on a small island",
        "in a bakery before dawn"]),
    ("explanation", "Why is {} important?", [
        "sleep for growing children", "clean drinking water", "a free press", "saving money for emergencies",
        "washing hands before eating", "biodiversity in a forest", "learning to read maps", "wearing a seatbelt",
        "backing up computer files", "stretching before exercise"]),
    ("explanation", "Describe what {} does on a normal working day.", [
        "a pharmacist", "an air traffic controller", "a zookeeper", "a librarian", "a park ranger",
        "a baker", "a software tester", "a ship's captain", "a translator", "a firefighter", "a farmer in spring",
        "a museum conservator"]),
    ("qa", "What would happen if {}?", [
        "the moon disappeared", "everyone in a city worked from home on the same day", "bees went extinct",
        "the internet stopped for a week", "people could not feel cold", "a country banned all cars",
        "nobody ever deleted an email", "the oceans froze", "a day lasted forty-eight hours",
        "every book had the same ending", "trees grew twice as fast", "money was made of ice"]),
    ("qa", "Name three interesting facts about {}.", [
        "octopuses", "the planet Saturn", "honey", "volcanoes", "the human heart", "penguins", "glaciers",
        "the printing press", "bamboo", "owls", "coral reefs", "the Sahara desert"]),
    ("advice", "I {}. What should I do?", [
        "broke my friend's favourite mug", "got a parking ticket I think is unfair",
        "forgot my partner's birthday", "have two job offers and cannot decide", "keep waking up at 3 am",
        "feel left out of my group chat", "lost my house keys for the third time this month",
        "am bored with my cooking", "have a noisy upstairs neighbor", "promised to help two friends on the same day",
        "want to quit a club I joined last month", "spilled coffee on a borrowed laptop",
        "never have time to exercise", "got lost in a new city", "have too many browser tabs open all the time"]),
    ("coding", "Write a SQL query that {}.", [
        "lists all customers from Canada", "counts the orders placed in 2023",
        "finds the three most expensive products",
        "shows each department with its average salary", "deletes users who never logged in",
        "finds books with no author", "lists students sorted by last name", "returns the total sales per month",
        "finds duplicate email addresses", "shows the newest order for each customer"]),
    ("coding", "Write a regular expression that {}.", [
        "matches a five-digit postal code", "finds every word that starts with a capital letter",
        "matches a time like 09:45", "finds hashtags in a tweet", "matches a simple phone number with dashes",
        "finds repeated words such as 'the the'", "matches a hex color like #a1b2c3",
        "finds every number with a decimal point"]),
    ("coding", "Find the bug in this Python code and fix it: {}", [
        "`def add(a, b): return a - b`", "`for i in range(len(items)): print(items[i + 1])`",
        "`if x = 5: print('five')`", "`total = 0\nfor n in nums: total = n`", "`names.append('Ana', 'Ben')`",
        "`def greet(name): print('Hello ' + nam)`", "`while i < 10: print(i)`", "`average = sum(nums) / len(num)`"]),
    ("coding", "Write a shell command that {}.", [
        "counts the lines in a file", "lists the five largest files in a folder",
        "finds every .txt file below the current folder",
        "shows the last twenty lines of a log", "renames every .jpeg file to .jpg", "prints the free disk space",
        "searches all Python files for the word TODO", "makes a compressed archive of a folder"]),
    ("classification", "Is this email spam or not spam? '{}'", [
        "Congratulations! You have won a free cruise. Click here to claim now.",
        "Hi Sam, the meeting moved to room 4 at 2 pm. See you there.",
        "Your account will be closed unless you send your password today.",
        "Reminder: your library books are due on Friday.", "Cheap watches, best prices, limited stock, buy buy buy!",
        "Mum says dinner is at seven on Sunday, bring a dessert.",
        "Dear winner, pay a small fee to release your prize money.", "The plumber can come on Tuesday morning."]),
    ("classification", "Rate how urgent this request is (low, medium or high) and say why: '{}'", [
        "The kitchen tap is dripping a little.", "There is smoke coming from the printer.",
        "Could you update the office plant schedule sometime?", "The website is down and customers cannot pay.",
        "Please send me last year's photos when you can.", "A patient's test results need a signature before noon.",
        "The coffee machine makes a strange noise.",
        "Someone left the front door of the building unlocked overnight."]),
    ("classification", "Which animal group does each of these belong to: {}?", [
        "frog, shark, bat, lizard", "whale, trout, owl, toad", "snake, dolphin, penguin, salamander",
        "crocodile, goat, parrot, eel", "newt, camel, robin, ray", "turtle, horse, pelican, goldfish"]),
    ("brainstorming", "Give me questions to ask {}.", [
        "a landlord before renting a flat", "a grandparent about their childhood", "a doctor about a new medicine",
        "at the end of a job interview", "a new friend on a first coffee", "a mechanic about a used car",
        "a teacher at a parents' evening", "a travel guide before a tour", "a coach before joining a team",
        "an author at a book signing"]),
    ("brainstorming", "Invent a holiday that celebrates {}, and describe how people would mark it.", [
        "public libraries", "the first warm day of the year", "people who fix things", "silence",
        "good neighbors", "the humble potato", "night-shift workers", "handwritten letters"]),
    ("planning", "Create a packing list for {}.", [
        "a weekend of camping in the rain", "a business trip of three days", "a beach holiday with a toddler",
        "a week-long cycling tour", "a winter visit to the mountains", "a school trip to a science museum",
        "a music festival", "a long train journey overnight", "moving into a student dorm", "a day at the zoo"]),
    ("planning", "Outline the steps to {}.", [
        "start a neighborhood newsletter", "organise a charity quiz night", "learn to touch type",
        "set up a home aquarium", "open a savings account", "build a simple bookshelf", "teach a dog a new trick",
        "prepare a garden for winter", "launch a small podcast", "host a language exchange evening",
        "write and send out a wedding invitation list", "paint a room without a mess"]),
    ("planning", "Draft an agenda for {}.", [
        "a one-hour team meeting about a product launch", "a parents' committee meeting",
        "a first meeting of a hiking club", "a workshop on saving energy at home", "a neighborhood safety meeting",
        "a student council's first session", "a volunteer training morning", "a family meeting about chores"]),
    ("summarization", "Summarize the story of {} in three sentences.", [
        "the tortoise and the hare", "Cinderella", "the three little pigs", "Goldilocks and the three bears",
        "the boy who cried wolf", "Jack and the beanstalk", "the ugly duckling", "Hansel and Gretel",
        "the fox and the grapes", "the ant and the grasshopper"]),
    ("summarization", "Summarize this conversation: '{}'", [
        "A: Are we still on for Friday? B: Yes, but can we meet at 7 instead of 6? A: Sure, same place? B: Yes.",
        "A: The printer is jammed again. B: Did you call support? A: Twice. B: Then let's use the one upstairs.",
        "A: I think we should paint the hall green. B: Green is dark. A: A light green, then. B: Fine, light green.",
        "A: Did anyone feed the cat? B: I thought you did. A: I thought you did. B: I'll do it now.",
        "A: The bus is late again. B: It said ten minutes. A: It said that twenty minutes ago. B: Let's walk.",
        "A: Can you cover my shift on Sunday? B: Only the morning. A: That helps, thanks. B: You owe me one."]),
    ("extraction", "List the ingredients mentioned in this text: '{}'", [
        "Fry the onion in butter, add rice and stock, and finish with parmesan and parsley.",
        "Mix flour, milk and two eggs, then pour the batter into a hot pan with a little oil.",
        "Blend the mango with yogurt, honey and a handful of ice.",
        "Toss the pasta with garlic, olive oil, chili flakes and lemon zest.",
        "Layer bread, tomato, mozzarella and basil, then bake until golden.",
        "Simmer lentils with carrot, cumin and a bay leaf for thirty minutes."]),
    ("extraction", "Find all the verbs in this sentence: '{}'", [
        "The children ran to the gate and waved at the passing train.",
        "She opened the box, looked inside and laughed.", "We cooked dinner while the rain fell outside.",
        "The old dog sleeps in the sun and dreams of rabbits.", "He wrote a list, lost it and started again.",
        "They painted the fence and planted roses along it."]),
    ("extraction", "What is the main complaint in this message? '{}'", [
        "I ordered a blue jacket and got a green one, and the sleeves are too short as well.",
        "The gym is fine, but the showers have been cold for two weeks now.",
        "Our street light has been flickering all month and nobody has come to fix it.",
        "The app keeps logging me out every time I switch screens.",
        "The delivery came on time but the box was soaked and the books are ruined.",
        "The class is good, but it starts so late that I miss the last bus home."]),
    ("rewriting", "Shorten this sentence without losing its meaning: '{}'", [
        "Due to the fact that it was raining, we made the decision to stay inside for the afternoon.",
        "At this point in time, we are not in a position to offer a refund.",
        "In the event that you need help, please do not hesitate to contact our team.",
        "The meeting, which was scheduled for Monday, has been moved to a later date that is still to be decided.",
        "It is absolutely essential that each and every student brings their own lunch on the trip.",
        "She made a quick decision very fast without thinking about it for very long.",
        "For the purpose of saving time, we will skip the introductions.",
        "The reason why I called you is because I wanted to ask you a question."]),
    ("rewriting", "Rewrite this in the past tense: '{}'", [
        "We walk to the market and buy fresh bread.", "The cat jumps onto the table and knocks over a glass.",
        "I write a letter every Sunday.", "They build a treehouse in the garden.",
        "She sings while she cooks dinner.", "The team wins the match and celebrates all night.",
        "He forgets his umbrella and gets wet.", "We swim in the lake before breakfast."]),
    ("rewriting", "Translate this jargon into plain English: '{}'", [
        "We need to leverage our synergies to move the needle this quarter.",
        "Let's circle back offline and take a deep dive into the deliverables.",
        "The patient presented with acute rhinorrhea.", "Your request has been escalated to tier two.",
        "The function returns a null pointer under edge conditions.",
        "We are right-sizing the organisation to optimise headcount.",
        "The asset depreciates on a straight-line basis.", "Please action the items in the backlog by EOD."]),
    ("classification", "Classify the sentiment of this review as positive, negative or mixed: '{}'", [
        "The food was cold but the staff were lovely.", "Best headphones I have ever owned.",
        "It broke after two days and nobody answered my emails.", "The plot was slow, yet the ending surprised me.",
        "I would not stay here again, even for free.", "Cheap, fast and does exactly what it says.",
        "The room was clean, but the walls were paper thin.", "My kids loved it and asked to go back.",
        "Too expensive for what you get.", "Friendly driver, late bus."]),
    ("classification", "Is this statement a fact or an opinion? '{}'", [
        "Water boils at 100 degrees Celsius at sea level.", "Summer is the best season.",
        "The Pacific is the largest ocean.", "Jazz is more relaxing than rock.", "A week has seven days.",
        "Homework should be banned.", "Spiders have eight legs.", "Cats make better pets than dogs.",
        "The Eiffel Tower is in Paris.", "Breakfast is the most important meal."]),
    ("classification", "Sort these into two groups and name each group: {}.", [
        "apple, carrot, banana, potato, grape, onion", "piano, hammer, violin, saw, flute, drill",
        "Mars, oak, Venus, pine, Jupiter, maple", "sparrow, salmon, eagle, tuna, robin, cod",
        "Monday, July, Friday, March, Sunday, October", "copper, granite, iron, marble, silver, slate",
        "soccer, chess, tennis, checkers, rugby, poker", "rain, joy, snow, anger, hail, fear"]),
    ("classification", "Which one does not belong, and why: {}?", [
        "square, triangle, circle, banana", "Paris, Rome, Berlin, Nile", "dog, cat, hamster, tulip",
        "red, blue, heavy, green", "run, jump, swim, chair", "violin, cello, trumpet, viola",
        "hour, minute, kilometre, second", "oak, pine, rose, birch"]),
    ("brainstorming", "List ideas for {}.", [
        "a rainy Saturday with two bored kids", "a birthday gift under ten dollars",
        "using leftover rice", "a school fundraiser", "making a commute more enjoyable",
        "a team-building activity that is not awkward", "decorating a small balcony",
        "a short story about time travel", "reducing plastic in a kitchen", "a themed dinner party",
        "a science project about plants", "things to do in a town with no cinema",
        "a podcast about local history", "keeping a long car trip fun", "reusing glass jars",
        "a mural on a school wall", "staying active during winter", "a name for a bakery that sells only pies",
        "a weekend with no screens", "welcoming new neighbors"]),
    ("brainstorming", "Suggest names for {}.", [
        "a coffee shop run by cats", "a robot vacuum", "a hiking club for beginners", "a yellow sailing boat",
        "a band that plays only sea shanties", "a newsletter about gardening", "a tabletop game about bees",
        "a shop that repairs old radios", "a goldfish", "a podcast about bad movies",
        "a bakery that opens at midnight", "a running team of grandparents"]),
    ("brainstorming", "What are some ways to {}?", [
        "cool a room without air conditioning", "make a boring meeting shorter", "remember to take medicine",
        "get children to eat vegetables", "use less water at home", "cheer up a friend who is sad",
        "learn the names of stars", "save time in the morning", "make a small garden attract birds",
        "practise a speech without an audience"]),
    ("planning", "Plan {}.", [
        "a three-day trip to a city you have never visited", "a week of cheap vegetarian dinners",
        "a surprise birthday party for a sibling", "a study schedule for a history exam",
        "a one-day hike for beginners", "a move to a new apartment", "a garden for a sunny backyard",
        "a school bake sale", "a budget for a first month in a new job", "a morning routine for a new parent",
        "a four-week plan to run five kilometres", "a family game night", "a clean-up of a messy garage",
        "a small wedding on a tight budget", "a reading challenge for a book club"]),
    ("planning", "Make a schedule for {}.", [
        "a Saturday full of errands", "learning to cook five new dishes in a month",
        "a week of house cleaning in short bursts", "a two-day coding workshop",
        "a child's summer holiday week", "preparing a presentation over three evenings",
        "a road trip with stops every two hours", "practising the piano for a recital",
        "a volunteer team at a food bank", "painting a bedroom over a weekend"]),
    ("summarization", "Summarize this paragraph in one sentence: '{}'", [
        "The town library has extended its hours to nine in the evening on weekdays. Staff say students asked "
        "for more time to study after school, and a grant from a local business pays for the extra shifts.",
        "Researchers tracked forty gardens for a year and found that those with more flowers attracted twice "
        "as many bees. They suggest planting a mix of species that bloom at different times.",
        "After three years of delays, the new bridge opened on Monday. Drivers report that the morning commute "
        "across the river is now fifteen minutes shorter, though cyclists say the bike lane is too narrow.",
        "The bakery on Main Street will close for two weeks to replace its old oven. The owner promised that "
        "regular customers will get a free loaf when it reopens.",
        "A survey of office workers found that most prefer working from home two days a week. Many said they "
        "get more done at home but miss chatting with colleagues.",
        "The school robotics team built a machine that sorts recycling by color. It won first prize at the "
        "regional fair, and the team now needs money to travel to the national event.",
        "Heavy rain flooded several streets overnight. The city has opened a shelter in the sports hall and "
        "asks residents to avoid driving until the water goes down.",
        "A small museum has started lending out telescopes like library books. Visitors can borrow one for a "
        "week and get a short lesson on how to find planets."]),
    ("summarization", "Summarize the main arguments for and against {}.", [
        "a four-day school week", "banning cars from city centers", "paying people to recycle",
        "homework for young children", "allowing pets in offices", "daylight saving time",
        "free public transport", "school uniforms", "building more wind farms", "a tax on sugary drinks",
        "remote work for everyone", "keeping zoos open"]),
    ("extraction", "List every number that appears in this text: '{}'", [
        "The recipe needs 3 eggs, 250 grams of flour and 2 spoons of sugar, and it bakes for 40 minutes.",
        "Our team of 12 walked 8 kilometres in 2 hours and drank 6 litres of water.",
        "Tickets cost 15 dollars for adults and 7 for children under 12.",
        "The building has 24 floors, 3 elevators and 480 windows.",
        "She read 52 books last year, 9 of them in French.",
        "The train left at 7, stopped 4 times and arrived 35 minutes late."]),
    ("extraction", "Extract the names of the people mentioned in this text: '{}'", [
        "Maria lent her bike to Tom, who rode it to see his aunt Rosa.",
        "At the meeting, Dr. Okafor thanked Lena and Sam for the report.",
        "Yuki and her brother Kenji met their teacher, Mr. Brandt, at the station.",
        "The prize went to Amir, and Claire and Pablo came second.",
        "Grandpa Joe told Nina a story about his friend Walter.",
        "Priya called Daniel, but only his roommate Felix answered."]),
    ("extraction", "Pull out the dates and places from this sentence: '{}'", [
        "We met in Dublin on 4 May and again in Lyon in late June.",
        "The festival runs in Austin from March 10 to March 19.",
        "My grandmother was born in Naples in 1948 and moved to Toronto in 1970.",
        "The ship left Lisbon on Tuesday and reached Madeira on Friday.",
        "The conference moves from Seoul in 2025 to Nairobi in 2026."]),
    ("rewriting", "Rewrite this sentence so it sounds more formal: '{}'", [
        "Hey, can you send me that file real quick?", "We gotta fix this before the boss sees it.",
        "The party was super fun and everyone loved it.", "I can't make it tomorrow, something came up.",
        "Thanks a bunch for helping out with the move.", "This plan is kind of a mess.",
        "Let me know if you wanna grab lunch.", "The new software is way better than the old one.",
        "Sorry for the late reply, been swamped.", "Can you guys keep it down a bit?"]),
    ("rewriting", "Make this message friendlier: '{}'", [
        "Your report is late. Send it today.", "Stop parking in my spot.", "The meeting is moved to 3.",
        "You forgot to attach the invoice.", "Do not use the kitchen after 10 pm.", "Bring your own cup.",
        "Your order will arrive next week.", "Clean the whiteboard after use.", "We are out of stock.",
        "Reply by Friday or lose your place."]),
    ("rewriting", "Fix the grammar in this sentence: '{}'", [
        "Me and him goes to the market every sundays.", "She don't like the movie we seen yesterday.",
        "There is many reasons why I likes it.", "The dog wagged it's tail when they comes home.",
        "If I would have known, I would of came earlier.", "Everyone have their own opinion about this.",
        "The books on the shelf is dusty.", "He run faster then his brother.",
        "Their going to the beach tomorrow, aren't they.", "I has finished my homework already."]),
    ("rewriting", "Rewrite this paragraph for a young child: '{}'", [
        "Photosynthesis is the process by which plants convert light energy into chemical energy stored in sugar.",
        "Inflation means that the general level of prices rises, so each unit of money buys less.",
        "Earthquakes occur when stress builds up along faults in the Earth's crust and is suddenly released.",
        "Vaccines expose the immune system to a harmless part of a germ so it can respond faster later.",
        "Recycling turns waste materials into new products and reduces the need for raw resources.",
        "The heart pumps blood through arteries and veins, delivering oxygen to every part of the body."]),
]

CODING_TASKS = ["read a text file line by line", "sort a list of names alphabetically", "get today's date",
                "join a list of words into one string", "check if a key exists in a dictionary",
                "round a number to two decimal places", "make a loop that counts down from ten",
                "convert a string to a number"]
LANGUAGES = ["Python", "JavaScript", "Java"]

# Word problems: (frame with {a} and {b}, pairs of numbers); the numbers are part of the task text.
MATH: list[tuple[str, list[tuple[int, int]]]] = [
    ("A baker makes {a} loaves an hour. How many loaves does she make in {b} hours?",
     [(12, 7), (18, 5), (25, 9), (14, 11)]),
    ("A class of {a} students splits into teams of {b}. How many full teams are there, and how many students "
     "are left over?", [(29, 4), (35, 6), (41, 5), (50, 7)]),
    ("A bike costs {a} dollars and is on sale for {b} percent off. What is the sale price?",
     [(240, 25), (180, 10), (320, 15), (95, 20)]),
    ("A train travels {a} kilometres in {b} hours. What is its average speed?",
     [(360, 4), (150, 2), (420, 6), (275, 5)]),
    ("A garden is {a} metres long and {b} metres wide. What is its area, and how much fence goes around it?",
     [(12, 8), (20, 5), (15, 9), (7, 7)]),
    ("Tom has {a} stickers and gives away {b} of them. What share of his stickers did he give away, as a "
     "fraction and as a percentage?", [(40, 10), (60, 15), (80, 20), (50, 35)]),
    ("A recipe for {a} people uses {b} cups of flour. How much flour is needed for 10 people?",
     [(4, 3), (5, 2), (8, 6), (2, 1)]),
    ("What is {a} multiplied by {b}? Show how you worked it out.", [(37, 24), (125, 8), (64, 15), (19, 21)]),
    ("If a phone battery loses {a} percent every hour, how long does a full battery last, and what is left "
     "after {b} hours?", [(8, 5), (12, 3), (5, 9), (10, 4)]),
    ("Sara saves {a} dollars a week. How many weeks does she need to save {b} dollars?",
     [(15, 240), (12, 150), (20, 330), (8, 100)]),
    ("A shop sells pens in packs of {a}. How many packs do you need for {b} pens, and how many pens are spare?",
     [(6, 40), (12, 100), (5, 33), (8, 70)]),
    ("A movie starts at 7:{a} pm and lasts {b} minutes. When does it end?", [(15, 135), (40, 95), (5, 150), (30, 118)]),
    ("What is the average of {a}, {b} and 30?", [(12, 18), (45, 21), (7, 50), (33, 27)]),
    ("A rope is {a} metres long. It is cut into pieces of {b} metres. How many pieces are there?",
     [(24, 3), (45, 5), (100, 8), (36, 4)]),
    ("A car uses {a} litres of fuel per 100 kilometres. How much fuel does it need for {b} kilometres?",
     [(6, 350), (8, 250), (5, 420), (7, 180)]),
    ("A water tank holds {a} litres and a tap fills it at {b} litres a minute. How long does it take to fill?",
     [(600, 12), (450, 9), (1000, 25), (360, 8)]),
]


def tasks() -> list[dict]:
    out = []
    for category, frame, subjects in FRAMES:
        if "{} in {}" in frame:
            out += [{"instruction": frame.format(task, lang), "category": category}
                    for task in CODING_TASKS for lang in LANGUAGES]
            continue
        out += [{"instruction": frame.format(s), "category": category} for s in subjects]
    for frame, numbers in MATH:
        out += [{"instruction": frame.format(a=a, b=b), "category": "math"} for a, b in numbers]
    return out


def build(candidates: list[dict], guarded: list[str]) -> tuple[list[dict], list[str]]:
    """(bank rows in a fixed shuffled order, texts left out as near-duplicates of a guarded text)."""
    index = RougeIndex()
    for text in guarded:
        index.add(text)
    kept, dropped, seen = [], [], set()
    for task in candidates:
        text = task["instruction"]
        if text in seen:
            continue
        seen.add(text)
        if index.max_score(text, NEAR) > NEAR:
            dropped.append(text)
            continue
        kept.append(task)
    random.Random(SEED).shuffle(kept)
    return kept, dropped


def main() -> None:
    heldout = [json.loads(line)["prompt"] for line in (PROMPTS / "heldout.jsonl").read_text().splitlines()]
    seeds = [json.loads(line)["instruction"] for line in (PROMPTS / "seed_tasks.jsonl").read_text().splitlines()]
    kept, dropped = build(tasks(), heldout + seeds)
    with (PROMPTS / "train_tasks.jsonl").open("w", encoding="utf-8") as f:
        for row in kept:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(kept)} tasks written to prompts/train_tasks.jsonl; {len(dropped)} left out as near-duplicates "
          "of a held-out or seed task:")
    for text in dropped:
        print(f"  {text}")


if __name__ == "__main__":
    main()
